package kafka

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/internal/testenv"
)

// pki is a test certificate authority and the certificates it signed, as
// PEM files.
type pki struct {
	dir            string
	ca             string // the CA's certificate
	serverKeystore string // the broker's key and certificate (for 127.0.0.1)
	clientCert     string
	clientKey      string
	caKey          *rsa.PrivateKey
	caCert         *x509.Certificate
	serial         int64
}

func newPKI(t *testing.T, dir string) *pki {
	t.Helper()
	p := &pki{dir: dir}
	p.caKey = mustRSA(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "flywheel test ca " + filepath.Base(dir)}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	p.caCert, _ = x509.ParseCertificate(der)
	p.ca = p.write(t, "ca.pem", pemOf("CERTIFICATE", der))
	skey, sder := p.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames: []string{"localhost"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	p.serverKeystore = p.write(t, "server.pem", append(pemOf("PRIVATE KEY", skey), pemOf("CERTIFICATE", sder)...))
	ckey, cder := p.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "flywheel"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p.clientKey = p.write(t, "client.key", pemOf("PRIVATE KEY", ckey))
	p.clientCert = p.write(t, "client.pem", pemOf("CERTIFICATE", cder))
	return p
}

func mustRSA(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// sign returns a new key (PKCS #8) and tmpl's certificate signed by the CA.
func (p *pki) sign(t *testing.T, tmpl *x509.Certificate) (key, cert []byte) {
	t.Helper()
	p.serial++
	tmpl.SerialNumber = big.NewInt(p.serial + 1)
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	k := mustRSA(t)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &k.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	return kder, der
}

func (p *pki) write(t *testing.T, name string, b []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The SASL users of the secure broker: one password for each mechanism.
const (
	secureUser     = "flywheel"
	securePassword = "Fly-wheel-9c2e"
)

// startSecureBroker starts a Kafka broker (the jars scripts/services.sh
// installs, KRaft, one node) whose client listener is SASL_SSL with
// PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 and requires a client certificate
// signed by p's CA. It returns the listener's address; the broker is
// stopped when the test ends.
func startSecureBroker(t *testing.T, p *pki) string {
	t.Helper()
	home := os.Getenv("FLYWHEEL_TEST_KAFKA_HOME")
	if home == "" {
		cache := os.Getenv("FLYWHEEL_CACHE")
		if cache == "" {
			h, _ := os.UserHomeDir()
			cache = filepath.Join(h, ".cache", "flywheel")
		}
		home = filepath.Join(cache, "kafka-4.1.1")
	}
	if _, err := os.Stat(filepath.Join(home, ".complete")); err != nil {
		t.Fatalf("Kafka's jars are not in %s (FLYWHEEL_TEST_KAFKA_HOME): run scripts/services.sh up, which installs them: %v", home, err)
	}
	dir := t.TempDir()
	port, internal, controller := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:%[3]d
listeners=SASL_SSL://127.0.0.1:%[1]d,INTERNAL://127.0.0.1:%[2]d,CONTROLLER://127.0.0.1:%[3]d
advertised.listeners=SASL_SSL://127.0.0.1:%[1]d,INTERNAL://127.0.0.1:%[2]d
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,INTERNAL:PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_%[5]s="%[6]s";
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.client.auth=required
ssl.keystore.type=PEM
ssl.keystore.location=%[7]s
ssl.truststore.type=PEM
ssl.truststore.location=%[8]s
log.dirs=%[4]s/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
`, port, internal, controller, dir, secureUser, securePassword, p.serverKeystore, p.ca)
	propsFile := filepath.Join(dir, "server.properties")
	log4j := filepath.Join(dir, "log4j2.properties")
	os.WriteFile(propsFile, []byte(props), 0o600)
	os.WriteFile(log4j, []byte("status = error\nappender.file.type = File\nappender.file.name = file\nappender.file.fileName = "+dir+
		"/server.log\nappender.file.layout.type = PatternLayout\nappender.file.layout.pattern = [%d] %p %m (%c)%n\nrootLogger.level = INFO\nrootLogger.appenderRef.file.ref = file\n"), 0o600)
	java := func(args ...string) *exec.Cmd {
		return exec.Command("java", append([]string{"-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
			"-Dlog4j2.configurationFile=" + log4j, "-Dkafka.logs.dir=" + dir, "-cp", filepath.Join(home, "libs") + "/*"}, args...)...)
	}
	scram := func(mech string) string {
		return fmt.Sprintf("%s=[name=%s,password=%s]", mech, secureUser, securePassword)
	}
	if out, err := java("kafka.tools.StorageTool", "format", "-t", "Zmx5d2hlZWwtc2VjdXJlLQ", "-c", propsFile,
		"--add-scram", scram("SCRAM-SHA-256"), "--add-scram", scram("SCRAM-SHA-512")).CombinedOutput(); err != nil {
		t.Fatalf("format the secure broker's storage: %v\n%s", err, out)
	}
	cmd := java("kafka.Kafka", propsFile)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		if b, _ := os.ReadFile(filepath.Join(dir, "server.log")); bytes.Contains(b, []byte("Kafka Server started")) {
			break
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("the secure broker exited: %v\n%s\n%s", err, stderr.String(), lastLines(string(b), 30))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("the secure broker did not start in 90s:\n%s", lastLines(string(b), 30))
		}
	}
	return fmt.Sprintf("127.0.0.1:%d", port)
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Every kind of client Flywheel opens works over SASL_SSL with a client
// certificate, with each SASL mechanism; a wrong password, an untrusted
// broker certificate or a missing client certificate fail at start
// (WaitReady), at once, with an error naming the setting and never the
// password.
func TestSecureBroker(t *testing.T) {
	p := newPKI(t, t.TempDir())
	addr := startSecureBroker(t, p)
	good := func(mech string) Config {
		return Config{Brokers: []string{addr}, TopicPrefix: fmt.Sprintf("s%d.", time.Now().UnixNano()), Partitions: 2,
			TLS:  TLSConfig{CAFile: p.ca, CertFile: p.clientCert, KeyFile: p.clientKey},
			SASL: SASLConfig{Mechanism: mech, Username: secureUser, Password: securePassword}}
	}
	for _, mech := range []string{SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512} {
		t.Run(mech, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cfg := good(mech)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			if err := WaitReady(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			if err := EnsureTopics(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			// A writer (Transport) and a group reader (Dialer), with lag.
			w := NewWriter(cfg, cfg.Topics().Decisions)
			defer w.Close()
			if err := w.WriteMessages(ctx, kafkago.Message{Key: []byte("k"), Value: []byte("v1")}, kafkago.Message{Key: []byte("k"), Value: []byte("v2")}); err != nil {
				t.Fatalf("write: %v", err)
			}
			group := cfg.TopicPrefix + "g"
			for { // the first group of a new broker waits for its offsets topic
				lag, err := GroupLag(ctx, cfg, group, cfg.Topics().Decisions)
				if err == nil && lag[cfg.Topics().Decisions] == 2 {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("lag %v, %v", lag, err)
				}
				time.Sleep(200 * time.Millisecond)
			}
			r := NewGroupReader(cfg, group, cfg.Topics().Decisions)
			defer r.Close()
			for _, want := range []string{"v1", "v2"} {
				m, err := r.FetchMessage(ctx)
				if err != nil || string(m.Value) != want {
					t.Fatalf("read %q, %v; want %q", m.Value, err, want)
				}
				if err := r.CommitMessages(ctx, m); err != nil {
					t.Fatal(err)
				}
			}
			// Model events (a tail reader) and the installation claim (a Client).
			pub := NewEventPublisher(cfg)
			defer pub.Close()
			er, err := NewEventReader(cfg, true)
			if err != nil {
				t.Fatal(err)
			}
			defer er.Close()
			if err := pub.Publish(ctx, flywheel.ModelEvent{Type: flywheel.EventPromoted, Model: "m", Version: 2}); err != nil {
				t.Fatal(err)
			}
			if e, err := er.Read(ctx); err != nil || e.Version != 2 {
				t.Fatalf("model event %+v, %v", e, err)
			}
			if err := Claim(ctx, cfg, "inst", "db", func(context.Context, string) (bool, error) { return false, nil }); err != nil {
				t.Fatal(err)
			}
			// The election (a consumer group's Dialer).
			el, err := NewElector(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ectx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- el.Run(ectx) }()
			for !el.IsLeader() {
				select {
				case <-ctx.Done():
					t.Fatal("the only member of the election never led")
				case <-time.After(100 * time.Millisecond):
				}
			}
			stop()
			<-done
		})
	}

	other := newPKI(t, t.TempDir()) // a CA that did not sign the broker's certificate
	for _, tc := range []struct {
		name   string
		change func(*Config)
		want   string
		slow   bool // nothing tells the client why: it waits until ctx ends
	}{
		{"wrong password", func(c *Config) { c.SASL.Password = "not-the-password" }, "kafka.sasl", false},
		{"wrong password, scram", func(c *Config) { c.SASL.Mechanism, c.SASL.Password = SASLSCRAMSHA512, "not-the-password" }, "kafka.sasl", false},
		{"untrusted broker certificate", func(c *Config) { c.TLS.CAFile = other.ca }, "kafka.tls.ca_file", false},
		{"no client certificate", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = "", "" }, "kafka.tls", false},
		{"plaintext to a TLS listener", func(c *Config) { c.TLS = TLSConfig{}; c.SASL = SASLConfig{} }, "kafka.tls is off, but the brokers expect TLS", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wait := 30 * time.Second
			if tc.slow {
				wait = 3 * time.Second
			}
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			cfg := good(SASLPlain)
			tc.change(&cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			err := WaitReady(ctx, cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WaitReady: %v; want an error naming %s", err, tc.want)
			}
			if strings.Contains(err.Error(), securePassword) || strings.Contains(err.Error(), "not-the-password") {
				t.Fatalf("the error shows a password: %v", err)
			}
			if took := time.Since(start); !tc.slow && took > 20*time.Second {
				t.Fatalf("WaitReady took %v to give up: a refusal is not worth waiting for", took)
			}
			t.Logf("%v", err)
		})
	}
}
