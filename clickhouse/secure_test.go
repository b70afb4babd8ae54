package clickhouse

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

	"go.yaml.in/yaml/v3"

	"github.com/flywheel-dev/flywheel"
	"github.com/flywheel-dev/flywheel/internal/testenv"
)

// secureConfig returns a config for a fresh database on the secure server
// (TLS, a password user) and the user's password.
func secureConfig(t *testing.T) (Config, string) {
	t.Helper()
	s := testenv.ClickHouseSecure(t)
	pw, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	return Config{DSN: fmt.Sprintf("clickhouse://%s/tls_%d", s.Addr, time.Now().UnixNano()), User: s.User,
		PasswordFile: s.PasswordFile, TLS: flywheel.TLSConfig{CAFile: s.CAFile}}, strings.TrimSpace(string(pw))
}

// otherCA writes the certificate of a CA that signed nothing the servers
// have, and a client certificate and key it signed; it returns their paths.
func otherCA(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	caKey, clientKey := mustKey(t), mustKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the server's ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	client := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "flywheel"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: tmpl.NotBefore, NotAfter: tmpl.NotAfter}
	clientDER, err := x509.CreateCertificate(rand.Reader, client, caCert, &clientKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("other-ca.pem", "CERTIFICATE", caDER), write("other-client.pem", "CERTIFICATE", clientDER), write("other-client.key", "PRIVATE KEY", keyDER)
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Over TLS, with the password from a file or given as it is, with or
// without a client certificate, the migrations run and the tables answer
// queries.
func TestSecureServer(t *testing.T) {
	s := testenv.ClickHouseSecure(t)
	for name, change := range map[string]func(c *Config, pw string){
		"password file":      func(*Config, string) {},
		"password":           func(c *Config, pw string) { c.PasswordFile, c.Password = "", flywheel.Secret(pw) },
		"client certificate": func(c *Config, _ string) { c.TLS.CertFile, c.TLS.KeyFile = s.CertFile, s.KeyFile },
	} {
		t.Run(name, func(t *testing.T) {
			cfg, pw := secureConfig(t)
			change(&cfg, pw)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := WaitReady(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			if err := Migrate(ctx, cfg); err != nil {
				t.Fatal(err)
			}
			conn := mustOpen(t, ctx, cfg)
			var n uint64
			if err := conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database()+".schema_migrations FINAL").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != uint64(SchemaVersion()) {
				t.Fatalf("schema_migrations has %d rows, want %d", n, SchemaVersion())
			}
			var user string // 18.16 has no currentUser(): this query is among the processes
			if err := conn.QueryRow(ctx, "SELECT user FROM system.processes WHERE query LIKE '%user check 5e1f%' LIMIT 1").Scan(&user); err != nil || user != cfg.User {
				t.Fatalf("logged in as %q (%v), want %q", user, err, cfg.User)
			}
		})
	}
}

// A wrong password, an untrusted certificate, a missing password file...
// fail at once, at start (WaitReady, Migrate, Open), with an error naming
// the setting and never showing a password.
func TestSecureServerRefusals(t *testing.T) {
	good, pw := secureConfig(t)
	ca, _, _ := otherCA(t)
	missing := filepath.Join(t.TempDir(), "no-such-password")
	const wrong = "not-the-password-7f3a"
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"wrong password", func(c *Config) { c.PasswordFile, c.Password = "", wrong }, "clickhouse.user and clickhouse.password: the server refused user \"flywheel\""},
		{"no password", func(c *Config) { c.PasswordFile = "" }, "clickhouse.user and clickhouse.password"},
		{"unknown user", func(c *Config) { c.User = "nobody" }, "clickhouse.user and clickhouse.password: the server refused user \"nobody\""},
		{"missing password file", func(c *Config) { c.PasswordFile = missing }, "clickhouse.password_file: open " + missing},
		{"untrusted ca", func(c *Config) { c.TLS.CAFile = ca }, "clickhouse.tls.ca_file: the server's certificate is not trusted"},
		{"system roots", func(c *Config) { c.TLS = flywheel.TLSConfig{Enabled: true} }, "clickhouse.tls.ca_file: the server's certificate is not trusted"},
		{"another server name", func(c *Config) { c.TLS.ServerName = "clickhouse.example" }, "clickhouse.tls.server_name: the server's certificate is not for that name"},
		{"tls to a plain port", func(c *Config) { c.DSN = "clickhouse://" + testenv.ClickHouse(t) + "/flywheel" }, "clickhouse.tls is set, but the server does not answer TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.change(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			errs := map[string]error{"WaitReady": WaitReady(ctx, cfg), "Migrate": Migrate(ctx, cfg)}
			if conn, err := Open(ctx, cfg); err == nil {
				conn.Close()
			} else {
				errs["Open"] = err
			}
			for what, err := range errs {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%s: %v; want an error containing %q", what, err, tc.want)
				}
				if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), wrong) {
					t.Fatalf("%s's error shows the password: %v", what, err)
				}
			}
		})
	}
}

// When the server breaks off the handshake (it resets the connection, as
// it might for other reasons; for a client certificate it did not sign, it
// sends a TLS alert first, or not), the error says which setting may be
// wrong: at once from Migrate and Open, from WaitReady when it gives up (or
// at once, after an alert).
func TestHandshakeBrokenOff(t *testing.T) {
	_, cert, key := otherCA(t)
	for _, tc := range []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"no tls at the tls port", func(c *Config) { c.TLS = flywheel.TLSConfig{} }, "clickhouse.tls is off"},
		{"client certificate of another ca", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = cert, key }, "clickhouse.tls.cert_file and key_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _ := secureConfig(t)
			tc.change(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, openErr := Open(ctx, cfg)
			for what, err := range map[string]error{"Migrate": Migrate(ctx, cfg), "Open": openErr, "WaitReady": WaitReady(ctx, cfg)} {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("%s: %v; want an error containing %q", what, err, tc.want)
				}
			}
		})
	}
}

// Bad settings are refused before anything connects, naming them.
func TestSecurityBadSettings(t *testing.T) {
	dir := t.TempDir()
	notPEM, pwFile := filepath.Join(dir, "not.pem"), filepath.Join(dir, "pw")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	os.WriteFile(pwFile, []byte("from-a-file\n"), 0o600)
	for _, tc := range []struct {
		name string
		c    Config
		want string
	}{
		{"ca file missing", Config{TLS: flywheel.TLSConfig{CAFile: filepath.Join(dir, "nosuch.pem")}}, "clickhouse.tls.ca_file: open"},
		{"ca file not pem", Config{TLS: flywheel.TLSConfig{CAFile: notPEM}}, "clickhouse.tls.ca_file " + notPEM + " holds no PEM certificate"},
		{"cert without key", Config{TLS: flywheel.TLSConfig{CertFile: notPEM}}, "clickhouse.tls.cert_file and clickhouse.tls.key_file go together"},
		{"key is not the cert's", Config{TLS: flywheel.TLSConfig{CertFile: notPEM, KeyFile: notPEM}}, "clickhouse.tls.cert_file and key_file"},
		{"password and file", Config{Password: "secret-in-config", PasswordFile: pwFile}, "clickhouse: set password or password_file, not both"},
		{"two users", Config{DSN: "clickhouse://alice@127.0.0.1:9440/flywheel", User: "bob"}, `clickhouse.user "bob" and the user of clickhouse.dsn ("alice") differ`},
		{"two passwords", Config{DSN: "clickhouse://alice:secret-in-dsn@127.0.0.1:9440/flywheel", PasswordFile: pwFile}, "give the password in one place"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.c.DSN == "" {
				tc.c.DSN = "clickhouse://127.0.0.1:9440/flywheel"
			}
			_, err := tc.c.Options()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Options: %v; want an error containing %q", err, tc.want)
			}
			for _, secret := range []string{"secret-in-config", "secret-in-dsn", "from-a-file"} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error shows a password: %v", err)
				}
			}
		})
	}
	o, err := Config{DSN: "clickhouse://127.0.0.1:9440/flywheel", User: "u", PasswordFile: pwFile, TLS: flywheel.TLSConfig{Enabled: true}}.Options()
	if err != nil || o.Auth.Username != "u" || o.Auth.Password != "from-a-file" || o.TLS == nil {
		t.Fatalf("Options: %+v, %v; want user u, the file's password without its newline, and TLS", o, err)
	}
}

// Neither password, clickhouse.password's nor the DSN's, prints: not with
// fmt, slog or JSON, alone or inside another struct.
func TestConfigDoesNotShowPasswords(t *testing.T) {
	const mine, dsns = "config-password-1b2c", "dsn-password-3d4e"
	c := Config{DSN: "clickhouse://alice:" + dsns + "@127.0.0.1:9440/flywheel?secure=true", User: "alice", Password: mine}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "clickhouse", c)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "clickhouse", c)
	js, err := json.Marshal(struct{ ClickHouse Config }{c})
	if err != nil {
		t.Fatal(err)
	}
	ym, err := yaml.Marshal(struct {
		ClickHouse Config `yaml:"clickhouse"`
	}{c})
	if err != nil {
		t.Fatal(err)
	}
	outer := struct{ ClickHouse Config }{c}
	for what, s := range map[string]string{
		"%v": fmt.Sprintf("%v", c), "%+v": fmt.Sprintf("%+v", c), "%#v": fmt.Sprintf("%#v", c), "%s": c.String(),
		"inside %+v": fmt.Sprintf("%+v", outer), "slog": logged.String(), "json": string(js), "yaml": string(ym),
	} {
		if strings.Contains(s, mine) || strings.Contains(s, dsns) {
			t.Errorf("%s shows a password: %s", what, s)
		}
		if strings.Count(s, flywheel.Redacted) < 2 && what != "slog" || strings.Count(s, flywheel.Redacted) < 4 && what == "slog" {
			t.Errorf("%s does not show both passwords as %s: %s", what, flywheel.Redacted, s)
		}
		if !strings.Contains(s, "alice") || !strings.Contains(s, "127.0.0.1:9440") {
			t.Errorf("%s hides more than the passwords: %s", what, s)
		}
	}
	if got := redactDSN("clickhouse://alice@h:9000/db"); got != "clickhouse://alice@h:9000/db" {
		t.Errorf("a DSN without a password: %s", got)
	}
	if got := redactDSN("clickhouse://al ice:pw@h:9000/db\x7f"); got != flywheel.Redacted {
		t.Errorf("a DSN that does not parse: %s", got)
	}
}
