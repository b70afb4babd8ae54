package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flywheel-dev/flywheel"
)

// testPKI writes a CA certificate and a client certificate and key it
// signed, as PEM files under t.TempDir(), and returns their paths.
func testPKI(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	clKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	clTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "flywheel"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caCert, _ := x509.ParseCertificate(caDER)
	clDER, err := x509.CreateCertificate(rand.Reader, clTmpl, caCert, &clKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(clKey)
	return write("ca.pem", "CERTIFICATE", caDER), write("client.pem", "CERTIFICATE", clDER), write("client.key", "PRIVATE KEY", keyDER)
}

const testPassword = "s3cret-Pa55word"

// Every client Flywheel opens gets the configured TLS and SASL: writers and
// clients through a Transport, readers and the election through a Dialer.
func TestSecurityMapping(t *testing.T) {
	ca, cert, key := testPKI(t)
	pwFile := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(pwFile, []byte(testPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	brokers := []string{"127.0.0.1:9093"}
	for _, tc := range []struct {
		name      string
		tls       TLSConfig
		sasl      SASLConfig
		wantTLS   bool
		wantCerts int
		wantCA    bool
		wantMech  string
	}{
		{name: "plaintext"},
		{name: "tls with the system roots", tls: TLSConfig{Enabled: true}, wantTLS: true},
		{name: "tls with a CA", tls: TLSConfig{CAFile: ca}, wantTLS: true, wantCA: true},
		{name: "mutual tls", tls: TLSConfig{CAFile: ca, CertFile: cert, KeyFile: key}, wantTLS: true, wantCA: true, wantCerts: 1},
		{name: "sasl plain over tls", tls: TLSConfig{CAFile: ca}, sasl: SASLConfig{Mechanism: "PLAIN", Username: "flywheel", Password: testPassword},
			wantTLS: true, wantCA: true, wantMech: "PLAIN"},
		{name: "scram-sha-256, password from a file", sasl: SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "flywheel", PasswordFile: pwFile},
			wantMech: "SCRAM-SHA-256"},
		{name: "scram-sha-512, lower case", sasl: SASLConfig{Mechanism: "scram-sha-512", Username: "flywheel", Password: testPassword},
			wantMech: "SCRAM-SHA-512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Brokers: brokers, TLS: tc.tls, SASL: tc.sasl}
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			w := NewWriter(c, "x")
			defer w.Close()
			rd := NewGroupReader(c, "g", "x")
			defer rd.Close()
			d := rd.Config().Dialer
			if !tc.wantTLS && tc.wantMech == "" {
				if w.Transport != nil {
					t.Fatalf("a plaintext writer has its own transport %#v (kafka-go's default expected)", w.Transport)
				}
				if d.TLS != nil || d.SASLMechanism != nil {
					t.Fatalf("a plaintext reader's dialer has TLS or SASL")
				}
				return
			}
			tr, ok := w.Transport.(*kafkago.Transport)
			if !ok {
				t.Fatalf("writer transport %T", w.Transport)
			}
			for _, got := range []struct {
				who  string
				tls  bool
				mech string
				cfg  func() (int, bool)
			}{
				{"writer", tr.TLS != nil, mechName(tr.SASL), func() (int, bool) { return len(tr.TLS.Certificates), tr.TLS.RootCAs != nil }},
				{"reader", d.TLS != nil, mechName(d.SASLMechanism), func() (int, bool) { return len(d.TLS.Certificates), d.TLS.RootCAs != nil }},
			} {
				if got.tls != tc.wantTLS || got.mech != tc.wantMech {
					t.Fatalf("%s: tls %v, sasl %q; want tls %v, sasl %q", got.who, got.tls, got.mech, tc.wantTLS, tc.wantMech)
				}
				if got.tls {
					if n, hasCA := got.cfg(); n != tc.wantCerts || hasCA != tc.wantCA {
						t.Fatalf("%s: %d client certificates, CA pool %v; want %d, %v", got.who, n, hasCA, tc.wantCerts, tc.wantCA)
					}
				}
			}
			cl, done := c.client(time.Second)
			defer done()
			if ct, ok := cl.Transport.(*kafkago.Transport); !ok || (ct.TLS != nil) != tc.wantTLS || mechName(ct.SASL) != tc.wantMech {
				t.Fatalf("client transport %#v", cl.Transport)
			}
			e, err := NewElector(c, nil)
			if err != nil {
				t.Fatal(err)
			}
			_ = e // the group's dialer is c.dialer(), as the readers'
		})
	}
}

func mechName(m interface{ Name() string }) string {
	if m == nil || fmt.Sprint(m) == "<nil>" {
		return ""
	}
	return m.Name()
}

// A bad setting is refused by Validate, before anything connects, with an
// error naming it and never showing the password.
func TestSecurityBadSettings(t *testing.T) {
	ca, cert, key := testPKI(t)
	notPEM := filepath.Join(t.TempDir(), "notpem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	missing := filepath.Join(t.TempDir(), "nosuch.pem")
	for _, tc := range []struct {
		name string
		tls  TLSConfig
		sasl SASLConfig
		want string
	}{
		{"ca file missing", TLSConfig{CAFile: missing}, SASLConfig{}, "kafka.tls.ca_file"},
		{"ca file not pem", TLSConfig{CAFile: notPEM}, SASLConfig{}, "kafka.tls.ca_file " + notPEM + " holds no PEM certificate"},
		{"cert without key", TLSConfig{CAFile: ca, CertFile: cert}, SASLConfig{}, "kafka.tls.cert_file and kafka.tls.key_file go together"},
		{"key is not the cert's", TLSConfig{CertFile: cert, KeyFile: ca}, SASLConfig{}, "kafka.tls.cert_file and key_file"},
		{"unknown mechanism", TLSConfig{}, SASLConfig{Mechanism: "GSSAPI", Username: "u", Password: testPassword}, "kafka.sasl.mechanism must be"},
		{"no username", TLSConfig{}, SASLConfig{Mechanism: "PLAIN", Password: testPassword}, "kafka.sasl.username is empty"},
		{"no password", TLSConfig{}, SASLConfig{Mechanism: "SCRAM-SHA-256", Username: "u"}, "kafka.sasl: no password"},
		{"password file missing", TLSConfig{}, SASLConfig{Mechanism: "PLAIN", Username: "u", PasswordFile: missing}, "kafka.sasl.password_file"},
		{"both password and file", TLSConfig{}, SASLConfig{Mechanism: "PLAIN", Username: "u", Password: testPassword, PasswordFile: key}, "not both"},
		{"password without mechanism", TLSConfig{}, SASLConfig{Username: "u", Password: testPassword}, "kafka.sasl.mechanism is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Config{Brokers: []string{"127.0.0.1:9092"}, TLS: tc.tls, SASL: tc.sasl}
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate: %v; want an error containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), testPassword) {
				t.Fatalf("the error shows the password: %v", err)
			}
			// A client made all the same fails at its first connection,
			// with the same error.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			w := NewWriter(c, "x")
			defer w.Close()
			w.MaxAttempts = 1
			if werr := w.WriteMessages(ctx, kafkago.Message{Value: []byte("v")}); werr == nil || !strings.Contains(werr.Error(), tc.want) {
				t.Fatalf("write: %v; want an error containing %q", werr, tc.want)
			}
			if _, derr := c.dialer().DialContext(ctx, "tcp", "127.0.0.1:9092"); derr == nil || !strings.Contains(derr.Error(), tc.want) {
				t.Fatalf("dial: %v; want an error containing %q", derr, tc.want)
			}
		})
	}
}

// The password does not print: not with fmt, slog, JSON or YAML.
func TestSecretDoesNotPrint(t *testing.T) {
	c := Config{Brokers: []string{"b:9092"}, SASL: SASLConfig{Mechanism: "PLAIN", Username: "u", Password: testPassword}}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "kafka", c, "password", c.SASL.Password)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "kafka", c)
	js, _ := json.Marshal(c)
	for what, s := range map[string]string{
		"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c), "%s": fmt.Sprintf("%s", c.SASL.Password),
		"slog": logged.String(), "json": string(js),
	} {
		if strings.Contains(s, testPassword) {
			t.Errorf("%s shows the password: %s", what, s)
		}
		if !strings.Contains(s, flywheel.Redacted) {
			t.Errorf("%s does not show %s: %s", what, flywheel.Redacted, s)
		}
	}
}

// Topics are made with the configured replication, min.insync.replicas and
// retention; the defaults suit one broker.
func TestTopicConfigs(t *testing.T) {
	entry := func(tc kafkago.TopicConfig, name string) string {
		for _, e := range tc.ConfigEntries {
			if e.ConfigName == name {
				return e.ConfigValue
			}
		}
		return ""
	}
	byName := func(c Config) map[string]kafkago.TopicConfig {
		out := map[string]kafkago.TopicConfig{}
		for _, tc := range c.TopicConfigs() {
			out[tc.Topic] = tc
		}
		return out
	}
	names := Config{}.Topics()
	def := byName(Config{})
	if tc := def[names.Decisions]; tc.ReplicationFactor != 1 || entry(tc, "min.insync.replicas") != "1" || entry(tc, "retention.ms") != "" {
		t.Fatalf("default decisions topic %+v", tc)
	}
	cluster := byName(Config{ReplicationFactor: 3, Retention: 72 * time.Hour, RetentionBytes: 1 << 30})
	for _, topic := range []string{names.Decisions, names.Feedback, names.ModelEvents, names.DLQ} {
		tc := cluster[topic]
		if tc.ReplicationFactor != 3 || entry(tc, "min.insync.replicas") != "2" || entry(tc, "retention.ms") != "259200000" || entry(tc, "retention.bytes") != "1073741824" {
			t.Fatalf("%s on a cluster: %+v", topic, tc)
		}
	}
	if tc := cluster[names.Installation]; entry(tc, "retention.ms") != "-1" || entry(tc, "min.insync.replicas") != "2" {
		t.Fatalf("installation topic %+v", tc)
	}
	if tc := cluster[names.SpoolWatermarks]; entry(tc, "retention.ms") != "86400000" {
		t.Fatalf("spool watermarks topic %+v", tc)
	}
	if tc := byName(Config{ReplicationFactor: 3, MinInsyncReplicas: 3})[names.Feedback]; entry(tc, "min.insync.replicas") != "3" {
		t.Fatalf("min_insync_replicas 3: %+v", tc)
	}
	for _, bad := range []struct {
		c    Config
		want string
	}{
		{Config{ReplicationFactor: 2, MinInsyncReplicas: 3}, "kafka.min_insync_replicas (3) is above kafka.replication_factor (2)"},
		{Config{MinInsyncReplicas: 2}, "kafka.min_insync_replicas (2) is above kafka.replication_factor (1)"},
		{Config{MinInsyncReplicas: -1}, "kafka.min_insync_replicas must not be negative"},
		{Config{Retention: time.Minute}, "kafka.retention must be"},
		{Config{RetentionBytes: -1}, "kafka.retention_bytes"},
	} {
		bad.c.Brokers = []string{"b:9092"}
		if err := bad.c.Validate(); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%+v: %v; want %q", bad.c, err, bad.want)
		}
	}
}

// On the real broker, the topics get the configured retention and
// min.insync.replicas.
func TestEnsureTopicsSettings(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := Config{Brokers: testBrokers(t), TopicPrefix: fmt.Sprintf("t%d.", time.Now().UnixNano()), Partitions: 2,
		MinInsyncReplicas: 1, Retention: 36 * time.Hour}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := EnsureTopics(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cl, done := cfg.client(10 * time.Second)
	defer done()
	resp, err := cl.DescribeConfigs(ctx, &kafkago.DescribeConfigsRequest{Resources: []kafkago.DescribeConfigRequestResource{
		{ResourceType: kafkago.ResourceTypeTopic, ResourceName: cfg.Topics().Decisions, ConfigNames: []string{"retention.ms", "min.insync.replicas"}},
		{ResourceType: kafkago.ResourceTypeTopic, ResourceName: cfg.Topics().Installation, ConfigNames: []string{"retention.ms"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range resp.Resources {
		if r.Error != nil {
			t.Fatalf("%s: %v", r.ResourceName, r.Error)
		}
		for _, e := range r.ConfigEntries {
			got[strings.TrimPrefix(r.ResourceName, cfg.TopicPrefix)+" "+e.ConfigName] = e.ConfigValue
		}
	}
	want := map[string]string{"flywheel.decisions retention.ms": "129600000", "flywheel.decisions min.insync.replicas": "1",
		"flywheel.installation retention.ms": "-1"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
}
