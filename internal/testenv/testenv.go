// Package testenv finds the real services the tests use: the Kafka broker
// and the ClickHouse server that `make test` starts (scripts/services.sh)
// and names in FLYWHEEL_TEST_* environment variables, as kafka-go's tests
// find theirs. A test that needs a service it cannot find fails: nothing is
// skipped, in CI or elsewhere.
package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// lookup returns the value of the environment variable name, failing tb
// when it is not set.
func lookup(tb testing.TB, name, what string) string {
	tb.Helper()
	v := os.Getenv(name)
	if v == "" {
		tb.Fatalf("%s is not set: run `make test`, which starts %s", name, what)
	}
	return v
}

// Kafka returns the brokers of the real Kafka (FLYWHEEL_TEST_KAFKA, a
// comma-separated list of host:port).
func Kafka(tb testing.TB) []string {
	tb.Helper()
	return strings.Split(lookup(tb, "FLYWHEEL_TEST_KAFKA", "Kafka"), ",")
}

// ClickHouse returns the native host:port of the real ClickHouse
// (FLYWHEEL_TEST_CLICKHOUSE).
func ClickHouse(tb testing.TB) string {
	tb.Helper()
	return lookup(tb, "FLYWHEEL_TEST_CLICKHOUSE", "ClickHouse")
}

// ClickHouseHTTP returns the HTTP host:port of the real ClickHouse
// (FLYWHEEL_TEST_CLICKHOUSE_HTTP).
func ClickHouseHTTP(tb testing.TB) string {
	tb.Helper()
	return lookup(tb, "FLYWHEEL_TEST_CLICKHOUSE_HTTP", "ClickHouse")
}

// SecureClickHouse is the ClickHouse of the TLS tests: its users need a
// password, its native port speaks TLS with a certificate its own CA signed.
type SecureClickHouse struct {
	Addr         string // host:port of the TLS native port
	CAFile       string // PEM of the CA that signed the server's certificate
	User         string
	PasswordFile string // the user's password (and a newline)
	// CertFile and KeyFile are a client certificate the CA signed: the
	// server takes clients without one and refuses one it did not sign.
	CertFile, KeyFile string
}

// ClickHouseSecure returns the ClickHouse of the TLS tests
// (FLYWHEEL_TEST_CLICKHOUSE_SECURE, and FLYWHEEL_TEST_CLICKHOUSE_SECURE_SECRETS,
// the folder of its ca.pem, user, password, client.pem and client.key files).
func ClickHouseSecure(tb testing.TB) SecureClickHouse {
	tb.Helper()
	what := "the secure ClickHouse (scripts/services.sh clickhouse-secure-up)"
	s := SecureClickHouse{Addr: lookup(tb, "FLYWHEEL_TEST_CLICKHOUSE_SECURE", what)}
	dir := lookup(tb, "FLYWHEEL_TEST_CLICKHOUSE_SECURE_SECRETS", what)
	s.CAFile, s.PasswordFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "password")
	s.CertFile, s.KeyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key")
	user, err := os.ReadFile(filepath.Join(dir, "user"))
	if err != nil {
		tb.Fatalf("FLYWHEEL_TEST_CLICKHOUSE_SECURE_SECRETS: %v (scripts/services.sh clickhouse-secure-up makes it)", err)
	}
	s.User = strings.TrimSpace(string(user))
	return s
}

// KafkaFault returns the host:port of the broker a test may stop and start
// (FLYWHEEL_TEST_KAFKA_FAULT); see Control.
func KafkaFault(tb testing.TB) string {
	tb.Helper()
	return lookup(tb, "FLYWHEEL_TEST_KAFKA_FAULT", "the fault-test broker")
}

// ClickHouseFault returns the native host:port of the ClickHouse a test may
// stop and start (FLYWHEEL_TEST_CLICKHOUSE_FAULT); see Control.
func ClickHouseFault(tb testing.TB) string {
	tb.Helper()
	return lookup(tb, "FLYWHEEL_TEST_CLICKHOUSE_FAULT", "the fault-test ClickHouse")
}

// ChDBPython returns the Python interpreter that has chDB installed
// (FLYWHEEL_TEST_CHDB_PYTHON), failing tb if it is not there.
func ChDBPython(tb testing.TB) string {
	tb.Helper()
	p := lookup(tb, "FLYWHEEL_TEST_CHDB_PYTHON", "ClickHouse and installs chDB")
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("FLYWHEEL_TEST_CHDB_PYTHON: %v (scripts/services.sh chdb installs it)", err)
	}
	return p
}

// Outage returns how long a fault test keeps a service down:
// FLYWHEEL_TEST_OUTAGE (a Go duration) when set, else def.
func Outage(tb testing.TB, def time.Duration) time.Duration {
	tb.Helper()
	v := os.Getenv("FLYWHEEL_TEST_OUTAGE")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		tb.Fatalf("FLYWHEEL_TEST_OUTAGE: %v", err)
	}
	return d
}

// Services returns the path of the services script
// (FLYWHEEL_TEST_SERVICES), which Control runs.
func Services(tb testing.TB) string {
	tb.Helper()
	return lookup(tb, "FLYWHEEL_TEST_SERVICES", "the services and names their script")
}

// Control runs the services script (FLYWHEEL_TEST_SERVICES) as
// `script SERVICE-VERB` for the instance of service ("kafka" or
// "clickhouse") listening at addr, for example to take the fault broker
// down and bring it up again. It fails tb if the script fails.
func Control(tb testing.TB, service, verb, addr string) {
	tb.Helper()
	script := Services(tb)
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatalf("%s address: %v", service, err)
	}
	cmd := exec.Command(script, service+"-"+verb)
	cmd.Env = append(os.Environ(), "FLYWHEEL_"+strings.ToUpper(service)+"_PORT="+port)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("%s %s-%s: %v\n%s", script, service, verb, err, out)
	}
}

// OBD returns the directory of the Open Bandit Dataset sample
// (FLYWHEEL_TEST_OBD) that scripts/obd.sh fetches and `make test` names:
// random/all/ and bts/all/, each with all.csv and item_context.csv.
func OBD(tb testing.TB) string {
	tb.Helper()
	dir := lookup(tb, "FLYWHEEL_TEST_OBD", "scripts/obd.sh, which fetches the Open Bandit Dataset sample,")
	if _, err := os.Stat(dir + "/bts/all/all.csv"); err != nil {
		tb.Fatalf("FLYWHEEL_TEST_OBD: %v (scripts/obd.sh fetches it)", err)
	}
	return dir
}

// KafkaCluster returns the brokers of the Kafka cluster of three that a
// test may kill brokers of (FLYWHEEL_TEST_KAFKA_CLUSTER, comma-separated;
// `scripts/services.sh kafka-cluster-up`); see KafkaClusterNode.
func KafkaCluster(tb testing.TB) []string {
	tb.Helper()
	return strings.Split(lookup(tb, "FLYWHEEL_TEST_KAFKA_CLUSTER", "the Kafka cluster"), ",")
}

// KafkaClusterNode runs the services script as `script kafka-cluster-node-VERB`
// for broker n (1-3) of the Kafka cluster: "down", "kill" (SIGKILL, no
// clean shutdown) or "up". It fails tb if the script fails.
func KafkaClusterNode(tb testing.TB, verb string, n int) {
	tb.Helper()
	script(tb, "kafka-cluster-node-"+verb, "FLYWHEEL_KAFKA_CLUSTER_NODE="+strconv.Itoa(n))
}

// ClickHouseCluster returns the native host:port of one node of the
// ClickHouse cluster of 2 shards x 2 replicas (FLYWHEEL_TEST_CLICKHOUSE_CLUSTER;
// `scripts/services.sh cluster-up`) and the cluster's name
// (FLYWHEEL_TEST_CLICKHOUSE_CLUSTER_NAME, default flywheel). It holds the
// cluster, shared with the other tests that call it, until tb ends, so that
// a test that stops a node (ClickHouseClusterExclusive) never runs while
// they do, in any package.
func ClickHouseCluster(tb testing.TB) (addr, name string) {
	tb.Helper()
	return clickHouseCluster(tb, syscall.LOCK_SH)
}

// ClickHouseClusterExclusive is ClickHouseCluster for a test that stops and
// starts nodes (ClickHouseClusterNode): it waits until no other test holds
// the cluster, and holds it alone until tb ends.
func ClickHouseClusterExclusive(tb testing.TB) (addr, name string) {
	tb.Helper()
	return clickHouseCluster(tb, syscall.LOCK_EX)
}

func clickHouseCluster(tb testing.TB, how int) (addr, name string) {
	tb.Helper()
	addr = lookup(tb, "FLYWHEEL_TEST_CLICKHOUSE_CLUSTER", "the ClickHouse cluster (scripts/services.sh cluster-up)")
	if name = os.Getenv("FLYWHEEL_TEST_CLICKHOUSE_CLUSTER_NAME"); name == "" {
		name = "flywheel"
	}
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "flywheel-test-clickhouse-cluster.lock"), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		tb.Fatalf("the cluster's test lock: %v", err)
	}
	// Alone on the cluster first, to check that its DDL queue moves (and
	// mend it if not), then shared if that is what was asked for.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		tb.Fatalf("the cluster's test lock: %v", err)
	}
	tb.Cleanup(func() { f.Close() }) // closing releases the lock
	mendDDLQueue(tb, addr, name)
	if how != syscall.LOCK_EX {
		if err := syscall.Flock(int(f.Fd()), how); err != nil {
			tb.Fatalf("the cluster's test lock: %v", err)
		}
	}
	return addr, name
}

// clusterNodes is how many nodes scripts/services.sh cluster-up starts, on
// native ports 9301 and up.
const clusterNodes = 4

// mendDDLQueue checks that every node of the cluster runs ON CLUSTER DDL:
// ClickHouse 18.16's DDL worker has been seen to stay on one task for
// good (an ALTER of a replicated table, under load, or a query that
// outlived a stopped replica), and then every later ON CLUSTER statement,
// of every test, waits on that node until it times out. A node that does
// not run a probe within 30 s is restarted, which clears it. The product
// reports the same thing as a migration error (TIMEOUT_EXCEEDED); the
// tests must not inherit it from one another.
func mendDDLQueue(tb testing.TB, addr, cluster string) {
	tb.Helper()
	host := strings.Split(addr, ":")[0]
	query := func(n int, timeout time.Duration, q string) (string, error) {
		cmd := exec.Command("clickhouse-client", "--host", host, "--port", strconv.Itoa(9300+n), "--distributed_ddl_task_timeout", "30", "--query", q)
		done := make(chan struct{})
		timer := time.AfterFunc(timeout, func() {
			select {
			case <-done:
			default:
				_ = cmd.Process.Kill()
			}
		})
		defer timer.Stop()
		out, err := cmd.CombinedOutput()
		close(done)
		return strings.TrimSpace(string(out)), err
	}
	probe := fmt.Sprintf("ddl_probe_%d", time.Now().UnixNano())
	out, err := query(1, 60*time.Second, "CREATE DATABASE IF NOT EXISTS "+probe+" ON CLUSTER "+cluster)
	has := func(n int) bool {
		o, err := query(n, 10*time.Second, "SELECT count() FROM system.databases WHERE name = '"+probe+"'")
		return err == nil && o == "1"
	}
	for n := 1; n <= clusterNodes; n++ {
		if err != nil && !has(n) {
			tb.Logf("ClickHouse cluster node %d did not run ON CLUSTER DDL within 30 s (%v: %.300s): restarting it", n, err, out)
			script(tb, "cluster-node-down", "FLYWHEEL_CLUSTER_NODE="+strconv.Itoa(n))
			script(tb, "cluster-node-up", "FLYWHEEL_CLUSTER_NODE="+strconv.Itoa(n))
			deadline := time.Now().Add(90 * time.Second)
			for !has(n) && time.Now().Before(deadline) {
				time.Sleep(500 * time.Millisecond)
			}
			if !has(n) {
				tb.Fatalf("ClickHouse cluster node %d still runs no ON CLUSTER DDL after a restart", n)
			}
		}
		_, _ = query(n, 10*time.Second, "DROP DATABASE IF EXISTS "+probe)
	}
}

// ClickHouseClusterNode runs the services script as `script
// cluster-node-VERB` ("down" or "up") for node n (1-4) of the ClickHouse
// cluster. Call ClickHouseClusterExclusive first.
func ClickHouseClusterNode(tb testing.TB, verb string, n int) {
	tb.Helper()
	script(tb, "cluster-node-"+verb, "FLYWHEEL_CLUSTER_NODE="+strconv.Itoa(n))
}

// script runs the services script with one command and extra environment.
func script(tb testing.TB, command string, env ...string) {
	tb.Helper()
	s := Services(tb)
	cmd := exec.Command(s, command)
	cmd.Env = append(os.Environ(), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("%s %s: %v\n%s", s, command, err, out)
	}
}

// handedOut holds every port FreePort has returned in this process.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a loopback TCP port that nothing listens on now and that
// this process has not been given before. The kernel may hand a port it
// just freed to the next bind of port 0, so two calls in a row can return
// the same number (a secure broker's two listeners once got one port and
// Kafka refused the configuration); the set rules that out. Another process
// can still take the port before the caller binds it.
func FreePort(tb testing.TB) int {
	tb.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = make(map[int]bool)
	}
	for range 1000 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port
		}
	}
	tb.Fatal("no loopback port this process has not used in 1000 binds")
	return 0
}

// FreeAddr is FreePort as a host:port on 127.0.0.1.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(tb)))
}
