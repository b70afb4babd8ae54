// Package clickhouse is Flywheel's thin adapter to ClickHouse: connection
// settings and the versioned, idempotent migrations that create the tables
// and views of the flywheel database. The SQL runs on ClickHouse 18.16 (the
// Debian package the tests use) and on current releases.
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flywheel-dev/flywheel"
)

// Config says where ClickHouse is.
type Config struct {
	// DSN such as clickhouse://user:pass@127.0.0.1:9000/flywheel (the native
	// protocol; the path names the database).
	DSN string `yaml:"dsn"`
	// Retention, when set, drops decisions and feedback older than this
	// (by their ts) with a table TTL, on servers that have TTL (19.6 and
	// newer); on older ones Migrate says so and nothing expires by itself.
	Retention time.Duration `yaml:"retention"`
	// Cluster, when set, is the name of a cluster in the servers'
	// <remote_servers> (with ZooKeeper, distributed DDL and the {shard} and
	// {replica} macros): Migrate then creates the schema on every node of
	// it with ON CLUSTER, replicated and sharded (cluster.go), and the
	// connections insert into the Distributed tables synchronously. Empty:
	// one server, as before.
	Cluster string `yaml:"cluster"`
	// User is who the connections log in as (empty: the DSN's, else
	// ClickHouse's "default").
	User string `yaml:"user"`
	// Password is the user's password, best given by the environment
	// (FLYWHEEL_CLICKHOUSE_PASSWORD); PasswordFile names a file holding it
	// instead (a trailing newline is not part of it). It is never logged or
	// shown in an error; nor is a password in the DSN, though one is best
	// kept out of it.
	Password     flywheel.Secret `yaml:"password"`
	PasswordFile string          `yaml:"password_file"`
	// TLS encrypts the connections, to the server's TLS native port (its
	// <tcp_port_secure>, 9440 by default: name that port in the DSN), and
	// checks the server's certificate against tls.ca_file (empty: the
	// system's roots); over the DSN's secure and skip_verify when set.
	TLS flywheel.TLSConfig `yaml:"tls"`
	// Log receives what Migrate says about the server: its version, a
	// warning outside the tested releases, features it lacks. Nil: discard.
	Log *slog.Logger `yaml:"-" json:"-"`
}

// The releases the product's SQL is tested on: every statement and every
// query of the analysts' guide runs on both with the same answers (the
// compatibility test). Releases in between share the SQL that both accept.
const (
	OldestTested = "18.16"
	NewestTested = "26.9"
)

// checkVersion says whether release v lies in the tested range.
func checkVersion(v serverVersion) bool {
	lo, _ := parseVersion(OldestTested)
	hi, _ := parseVersion(NewestTested)
	return v.atLeast(lo.major, lo.minor) && (hi.major > v.major || hi.major == v.major && hi.minor >= v.minor)
}

func (c Config) logger() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c.Log
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Options returns the options of c's connections: the DSN's, with the
// user, password and TLS settings (reading the files they name). Its
// errors name the setting that is wrong and never show a password.
func (c Config) Options() (*ch.Options, error) {
	o, err := c.parse()
	if err != nil {
		return nil, err
	}
	if err := c.secure(o); err != nil {
		return nil, err
	}
	return o, nil
}

// parse parses the DSN and checks it.
func (c Config) parse() (*ch.Options, error) {
	if c.DSN == "" {
		return nil, fmt.Errorf("clickhouse.dsn is empty")
	}
	o, err := ch.ParseDSN(c.DSN)
	if err != nil {
		return nil, fmt.Errorf("clickhouse.dsn: %w", err)
	}
	if o.Auth.Database == "" {
		o.Auth.Database = "flywheel"
	}
	if !identRE.MatchString(o.Auth.Database) {
		return nil, fmt.Errorf("clickhouse.dsn: database name %q is not a plain identifier", o.Auth.Database)
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.MaxOpenConns == 0 {
		o.MaxOpenConns = 16
	}
	if c.Cluster != "" {
		if !identRE.MatchString(c.Cluster) {
			return nil, fmt.Errorf("clickhouse.cluster: %q is not a plain identifier", c.Cluster)
		}
		if o.Settings == nil {
			o.Settings = ch.Settings{}
		}
		for k, v := range clusterSettings {
			if _, set := o.Settings[k]; !set {
				o.Settings[k] = v
			}
		}
	}
	return o, nil
}

// Database returns the configured database name ("flywheel" by default).
func (c Config) Database() string {
	o, err := c.parse()
	if err != nil {
		return "flywheel"
	}
	return o.Auth.Database
}

// Open connects to the configured database and pings it. The caller closes
// the connection; it is safe for concurrent use. A refusal of the user,
// password or TLS settings is an error naming the setting.
func Open(ctx context.Context, c Config) (driver.Conn, error) {
	o, err := c.Options()
	if err != nil {
		return nil, err
	}
	return c.open(ctx, o)
}

// refusedError is the server's refusal of the client's user, password or
// TLS settings, which no retry mends; its message names the setting.
type refusedError struct{ error }

func (e refusedError) Unwrap() error { return e.error }

// open opens a connection with o and pings it; a refusal of c's settings
// is a refusedError.
func (c Config) open(ctx context.Context, o *ch.Options) (driver.Conn, error) {
	conn, err := ch.Open(o)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse: %w", err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		if refused := c.refusal(err, o); refused != nil {
			return nil, refusedError{fmt.Errorf("clickhouse at %v: %w", o.Addr, refused)}
		}
		return nil, fmt.Errorf("ping clickhouse at %v: %w%s", o.Addr, err, hint(o, err))
	}
	return conn, nil
}

// WaitReady waits until the server answers or ctx ends. A refusal of the
// user, password or TLS settings (a wrong password, an untrusted
// certificate) is returned at once, naming the setting.
func WaitReady(ctx context.Context, c Config) error {
	o, err := c.Options()
	if err != nil {
		return err
	}
	o.Auth.Database = "default"
	var last error
	for {
		conn, err := c.open(ctx, o)
		if err == nil {
			conn.Close()
			return nil
		}
		if errors.As(err, new(refusedError)) {
			return err
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("clickhouse at %v is not reachable: %w (last error: %v)", o.Addr, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
