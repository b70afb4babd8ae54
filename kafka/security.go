package kafka

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/flywheel-dev/flywheel"
)

// TLSConfig is how Flywheel's Kafka clients encrypt their connections and,
// with a client certificate, authenticate (kafka.tls; a client certificate
// is for brokers with ssl.client.auth=required).
type TLSConfig = flywheel.TLSConfig

// SASL mechanisms.
const (
	SASLPlain       = "PLAIN"
	SASLSCRAMSHA256 = "SCRAM-SHA-256"
	SASLSCRAMSHA512 = "SCRAM-SHA-512"
)

// SASLConfig is how Flywheel's Kafka clients authenticate (kafka.sasl).
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 ("": no SASL).
	// PLAIN sends the password as it is: use it over TLS only.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password is the password itself, best given by the environment
	// (FLYWHEEL_KAFKA_SASL_PASSWORD); PasswordFile names a file holding it
	// instead (a trailing newline is not part of it). It is never logged
	// or shown in an error.
	Password     Secret `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// Secret is a string that does not print (flywheel.Secret).
type Secret = flywheel.Secret

// security is what every connection of one configuration uses: nil fields
// for plain connections.
type security struct {
	tls  *tls.Config
	sasl sasl.Mechanism
}

// security reads the files that kafka.tls and kafka.sasl name and returns
// what every client needs, or an error naming the setting that is wrong
// (never showing a password).
func (c Config) security() (security, error) {
	var s security
	cfg, err := c.TLS.Load("kafka.tls")
	if err != nil {
		return s, err
	}
	s.tls = cfg
	m := c.SASL
	if m.Mechanism == "" {
		if m.Username != "" || m.Password != "" || m.PasswordFile != "" {
			return s, errors.New("kafka.sasl.mechanism is empty, but a username or password is set: name the mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
		}
		return s, nil
	}
	if m.Username == "" {
		return s, errors.New("kafka.sasl.username is empty")
	}
	secret, err := flywheel.ReadPassword("kafka.sasl", m.Password, m.PasswordFile)
	if err != nil {
		return s, err
	}
	password := string(secret)
	if password == "" {
		return s, errors.New("kafka.sasl: no password (set kafka.sasl.password, best through FLYWHEEL_KAFKA_SASL_PASSWORD, or kafka.sasl.password_file)")
	}
	switch strings.ToUpper(m.Mechanism) {
	case SASLPlain:
		s.sasl = plain.Mechanism{Username: m.Username, Password: password}
	case SASLSCRAMSHA256, SASLSCRAMSHA512:
		algo := scram.SHA256
		if strings.ToUpper(m.Mechanism) == SASLSCRAMSHA512 {
			algo = scram.SHA512
		}
		mech, err := scram.Mechanism(algo, m.Username, password)
		if err != nil { // only a username or password SASLprep refuses
			return s, fmt.Errorf("kafka.sasl: the username or password is not valid for %s", m.Mechanism)
		}
		s.sasl = mech
	default:
		return s, fmt.Errorf("kafka.sasl.mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; got %q", m.Mechanism)
	}
	return s, nil
}

// refusal returns err, when it says the brokers refused this client's
// security settings (which no retry mends), as an error naming the
// setting; otherwise nil. It never shows the password.
func (c Config) refusal(err error) error {
	var header tls.RecordHeaderError
	tlsRefused := flywheel.TLSRefusal("kafka.tls", c.TLS, err)
	switch {
	case errors.Is(err, kafkago.SASLAuthenticationFailed):
		return fmt.Errorf("kafka.sasl: the brokers refused user %q with %s (check kafka.sasl.username and its password): %w", c.SASL.Username, strings.ToUpper(c.SASL.Mechanism), err)
	case errors.Is(err, kafkago.UnsupportedSASLMechanism), errors.Is(err, kafkago.IllegalSASLState):
		return fmt.Errorf("kafka.sasl.mechanism: the brokers do not take %s: %w", c.SASL.Mechanism, err)
	case tlsRefused != nil:
		return tlsRefused
	case errors.As(err, &header):
		return fmt.Errorf("kafka.tls: the brokers do not answer TLS (a PLAINTEXT or SASL_PLAINTEXT listener?): %w", err)
	case !c.TLS.On() && strings.Contains(err.Error(), "broker appears to be expecting TLS"): // kafka-go's reading of a TLS alert
		return fmt.Errorf("kafka.tls is off, but the brokers expect TLS (an SSL or SASL_SSL listener): set kafka.tls: %w", err)
	}
	return nil
}

// hint is what WaitReady adds when the brokers never answered: plaintext
// clients reading the end of a connection a TLS listener closed.
func (c Config) hint() string {
	if !c.TLS.On() {
		return " (kafka.tls is off: if the brokers' listener is SSL or SASL_SSL, set kafka.tls)"
	}
	return ""
}

// plain reports whether connections need neither TLS nor SASL.
func (s security) plain() bool { return s.tls == nil && s.sasl == nil }

// transport returns the transport of a writer or a client of c: nil (kafka-go's
// shared default) for plain connections, otherwise one with c's TLS and
// SASL. If c's security settings cannot be read (Validate reports that
// before anything connects), every dial of the transport fails with that
// error, naming the setting. A transport that is not nil is the caller's to
// close (CloseIdleConnections) when it is done with it; a writer does so
// when it is closed.
func (c Config) transport() *kafkago.Transport {
	s, err := c.security()
	if err != nil {
		return &kafkago.Transport{Dial: func(context.Context, string, string) (net.Conn, error) { return nil, err }}
	}
	if s.plain() {
		return nil
	}
	return &kafkago.Transport{TLS: s.tls, SASL: s.sasl, DialTimeout: 5 * time.Second}
}

// client returns a kafkago.Client of c with its transport (nil: the
// default), with the function that releases its connections.
func (c Config) client(timeout time.Duration) (*kafkago.Client, func()) {
	cl := &kafkago.Client{Addr: kafkago.TCP(c.Brokers...), Timeout: timeout}
	t := c.transport()
	if t == nil {
		return cl, func() {}
	}
	cl.Transport = t
	return cl, t.CloseIdleConnections
}

// dialer returns the dialer of c's readers and consumer groups (kafka-go
// uses a Dialer there, not a Transport): kafka-go's default for plain
// connections, otherwise one with c's TLS and SASL. If c's security
// settings cannot be read, every dial fails with that error.
func (c Config) dialer() *kafkago.Dialer {
	d := &kafkago.Dialer{Timeout: 10 * time.Second, DualStack: true}
	s, err := c.security()
	if err != nil {
		d.DialFunc = func(context.Context, string, string) (net.Conn, error) { return nil, err }
		return d
	}
	d.TLS, d.SASLMechanism = s.tls, s.sasl
	return d
}
