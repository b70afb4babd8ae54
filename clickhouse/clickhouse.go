// Package clickhouse is Flywheel's thin adapter to ClickHouse: connection
// settings and the versioned, idempotent migrations that create the tables
// and views of the flywheel database. The SQL runs on ClickHouse 18.16 (the
// Debian package the tests use) and on current releases.
package clickhouse

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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
	// Log receives what Migrate says about the server: its version, a
	// warning outside the tested releases, features it lacks. Nil: discard.
	Log *slog.Logger `yaml:"-"`
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

// Options parses the DSN and checks it.
func (c Config) Options() (*ch.Options, error) {
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
	o, err := c.Options()
	if err != nil {
		return "flywheel"
	}
	return o.Auth.Database
}

// Open connects to the configured database and pings it. The caller closes
// the connection; it is safe for concurrent use.
func Open(ctx context.Context, c Config) (driver.Conn, error) {
	o, err := c.Options()
	if err != nil {
		return nil, err
	}
	conn, err := ch.Open(o)
	if err != nil {
		return nil, fmt.Errorf("open clickhouse: %w", err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ping clickhouse at %v: %w", o.Addr, err)
	}
	return conn, nil
}

// WaitReady waits until the server answers or ctx ends.
func WaitReady(ctx context.Context, c Config) error {
	o, err := c.Options()
	if err != nil {
		return err
	}
	o.Auth.Database = "default"
	var last error
	for {
		conn, err := ch.Open(o)
		if err == nil {
			err = conn.Ping(ctx)
			conn.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("clickhouse at %v is not reachable: %w (last error: %v)", o.Addr, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
