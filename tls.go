package flywheel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLSConfig is how a client of a server Flywheel uses (Kafka's brokers:
// kafka.tls; ClickHouse: clickhouse.tls) encrypts its connections and, with
// a client certificate, authenticates.
type TLSConfig struct {
	// Enabled turns TLS on; setting ca_file or cert_file turns it on too.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM file of the certificates that sign the servers'
	// (empty: the system's roots).
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client's certificate and key (PEM), for
	// servers that require one; both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName is the name checked in the servers' certificates (empty:
	// each server's host).
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify accepts any server certificate: for trying things
	// out only, never in production.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// On reports whether TLS is on: enabled, or a CA or client certificate
// named.
func (t TLSConfig) On() bool { return t.Enabled || t.CAFile != "" || t.CertFile != "" }

// Load reads the files t names and returns the configuration of its
// connections, nil when TLS is off. A file that cannot be read, or holds
// no certificate, is an error naming the setting under path (such as
// "kafka.tls").
func (t TLSConfig) Load(path string) (*tls.Config, error) {
	if !t.On() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_file: %w", path, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ca_file %s holds no PEM certificate", path, t.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case t.CertFile != "" && t.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file and key_file: %w", path, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case t.CertFile != "" || t.KeyFile != "":
		return nil, fmt.Errorf("%[1]s.cert_file and %[1]s.key_file go together: set both or neither", path)
	}
	return cfg, nil
}

// TLSRefusal returns err, when it says that a connection made with the TLS
// settings under path failed its handshake (a server certificate not
// trusted or not for the name, a client certificate refused), as an error
// naming the setting; otherwise nil.
func TLSRefusal(path string, t TLSConfig, err error) error {
	var (
		unknownCA x509.UnknownAuthorityError // crypto/x509 returns these as values
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
		verify    *tls.CertificateVerificationError
	)
	switch {
	case errors.As(err, &hostname):
		return fmt.Errorf("%s.server_name: the server's certificate is not for that name: %w", path, err)
	case errors.As(err, &unknownCA), errors.As(err, &invalid), errors.As(err, &verify):
		return fmt.Errorf("%s.ca_file: the server's certificate is not trusted: %w", path, err)
	case t.On() && strings.Contains(err.Error(), "remote error: tls: "): // crypto/tls's alert type is not exported
		return fmt.Errorf("%[1]s: the server refused the TLS connection (%[1]s.cert_file and key_file: is a client certificate required, or not signed by a CA it trusts?): %[2]w", path, err)
	}
	return nil
}

// ReadPassword returns the password set under path ("kafka.sasl"): password
// itself, or the content of file (without a trailing newline); "" when
// neither is set. Its errors name the setting and never show the password.
func ReadPassword(path string, password Secret, file string) (Secret, error) {
	switch {
	case file != "" && password != "":
		return "", fmt.Errorf("%s: set password or password_file, not both", path)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("%s.password_file: %w", path, err)
		}
		return Secret(strings.TrimRight(string(b), "\r\n")), nil
	}
	return password, nil
}
