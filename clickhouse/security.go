package clickhouse

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/flywheel-dev/flywheel"
)

// secure sets o's user, password and TLS from c (clickhouse.user,
// password or password_file, tls), or returns an error naming the setting
// that is wrong; it never shows a password.
func (c Config) secure(o *ch.Options) error {
	if c.User != "" {
		if o.Auth.Username != "" && o.Auth.Username != c.User {
			return fmt.Errorf("clickhouse.user %q and the user of clickhouse.dsn (%q) differ: name the user in one place", c.User, o.Auth.Username)
		}
		o.Auth.Username = c.User
	}
	password, err := flywheel.ReadPassword("clickhouse", c.Password, c.PasswordFile)
	if err != nil {
		return err
	}
	if password != "" {
		if o.Auth.Password != "" {
			return errors.New("clickhouse: clickhouse.dsn holds a password and clickhouse.password or password_file is set too: give the password in one place")
		}
		o.Auth.Password = string(password)
	}
	cfg, err := c.TLS.Load("clickhouse.tls")
	if err != nil {
		return err
	}
	if cfg != nil { // over the DSN's secure=true and skip_verify
		o.TLS = cfg
	}
	return nil
}

// ClickHouse's error codes for a login it refuses: an unknown user, a wrong
// password, a password missing (18.16), any of them (newer releases).
const (
	codeUnknownUser          = 192
	codeWrongPassword        = 193
	codeRequiredPassword     = 194
	codeAuthenticationFailed = 516
)

// refusal returns err, when it says the server refused this client's user,
// password or TLS settings (which no retry mends), as an error naming the
// setting; otherwise nil. It never shows the password.
func (c Config) refusal(err error, o *ch.Options) error {
	var (
		exception *ch.Exception
		header    tls.RecordHeaderError
	)
	if errors.As(err, &exception) {
		switch exception.Code {
		case codeUnknownUser, codeWrongPassword, codeRequiredPassword, codeAuthenticationFailed:
			return fmt.Errorf("clickhouse.user and clickhouse.password: the server refused user %q (check the user and its password, or password_file): %w", o.Auth.Username, err)
		}
		return nil
	}
	if refused := flywheel.TLSRefusal("clickhouse.tls", c.TLS, err); refused != nil {
		return refused
	}
	if o.TLS != nil && errors.As(err, &header) {
		return fmt.Errorf("clickhouse.tls is set, but the server does not answer TLS on %v (the plain native port? the TLS one is the server's <tcp_port_secure>, 9440 by default): %w", o.Addr, err)
	}
	return nil
}

// hint is what a failed ping adds when the server broke off the
// handshake, as a TLS port does to a client without TLS and a server that
// verifies client certificates does to one its CA did not sign: it only
// resets the connection, as it might for other reasons.
func hint(o *ch.Options, err error) string {
	switch {
	case !strings.Contains(err.Error(), "handshake"):
	case o.TLS == nil:
		return " (clickhouse.tls is off: if that is the server's TLS port, its <tcp_port_secure>, set clickhouse.tls)"
	case len(o.TLS.Certificates) > 0:
		return " (clickhouse.tls.cert_file and key_file: is the client certificate signed by a CA the server trusts?)"
	}
	return ""
}

// shown is c as it may be shown: the passwords, its own and the DSN's,
// redacted. It has none of Config's methods.
type shown Config

func (c Config) shown() shown {
	c.DSN = redactDSN(c.DSN)
	c.Log = nil
	return shown(c)
}

// redactDSN returns dsn with its password, if any, as [redacted]; a DSN
// that does not parse, all redacted.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return flywheel.Redacted
	}
	if u.User == nil {
		return dsn
	}
	if _, set := u.User.Password(); !set {
		return dsn
	}
	user := url.User(u.User.Username()).String()
	u.User = url.User(u.User.Username())
	return strings.Replace(u.String(), "//"+user+"@", "//"+user+":"+flywheel.Redacted+"@", 1)
}

// String shows c with its passwords (clickhouse.password and the DSN's)
// as [redacted].
func (c Config) String() string { return fmt.Sprintf("%+v", c.shown()) }

// GoString is what %#v shows: c with its passwords redacted.
func (c Config) GoString() string { return fmt.Sprintf("%#v", c.shown()) }

// LogValue is what slog shows: c with its passwords redacted.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON encodes c with its passwords redacted.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.shown()) }

// MarshalYAML encodes c with its passwords redacted.
func (c Config) MarshalYAML() (any, error) { return c.shown(), nil }
