package clickhouse

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Cluster mode (Config.Cluster set): the same schema as on one server, on
// every node of a ClickHouse cluster, under the names the product reads.
//
//   - decisions and feedback, the large tables, are sharded by a hash of
//     event_id: each node has decisions_local and feedback_local,
//     Replicated…MergeTree tables at /clickhouse/tables/{shard}/<db>/<table>
//     (the servers' {shard} and {replica} macros), and decisions and
//     feedback are Distributed tables over them with the sharding key
//     cityHash64(event_id). A decision, its feedback and their duplicates
//     are on one shard, so FINAL and the examples join per event give the
//     answers of one server.
//   - every other table (models, deployments, actions, the watermarks,
//     schema_migrations, …) is small and replicated on every node, at
//     /clickhouse/tables/all/<db>/<table>: each node reads it whole,
//     locally. {replica} must therefore be unique across the whole
//     cluster, not only within a shard (the host name, or s1r1, s1r2, …).
//   - the views are created on every node, over the Distributed tables.
//
// Every statement goes to every node with ON CLUSTER (the servers'
// <distributed_ddl> queue), and the migrations applied are recorded once for
// the whole cluster in the replicated schema_migrations. Several processes
// may migrate at once: each statement is idempotent, each node runs the DDL
// queue in one order, and every process's sequence of statements on a view
// ends by creating it with its newest definition (IF NOT EXISTS), so
// whatever the interleaving the views end in their newest definition.

// clusterSettings are added to every connection in cluster mode (Options).
// (ClickHouse 18.16 takes only numbers as settings of a connection: the
// servers' profile sets load_balancing, below.)
var clusterSettings = map[string]any{
	// An insert into a Distributed table returns once every shard has its
	// rows, instead of once they are queued on the node it was sent to:
	// what ingest acknowledges is stored, and readable at once.
	"insert_distributed_sync": 1,
}

// wantProfile is what the cluster's servers should have in their default
// profile (ClickHouse 18.16 takes only numbers as settings of a connection,
// so the product cannot send these); Migrate warns when a server has
// other values.
var wantProfile = map[string]string{
	// Reads and writes of each shard go to its first healthy replica in
	// the cluster's order (the node connected to, for its own shard), so
	// that a process reads what it has just written before the other
	// replica has fetched it; the second replica takes over when the first
	// is down.
	"load_balancing": "in_order",
	// A query of a Distributed table with IN or JOIN over another (the
	// analysts' guide has one) runs the subquery once, on the node the
	// query was sent to, instead of being refused.
	"distributed_product_mode": "global",
}

const (
	// localSuffix names the local (sharded, replicated) table under a
	// Distributed table.
	localSuffix = "_local"
	// shardingKey sends a decision and its feedback to the same shard.
	shardingKey = "cityHash64(event_id)"
	// The ZooKeeper paths of the replicated tables ({db} is put in place
	// by expand; {shard} and {replica} are the servers' macros).
	zkShardPath = "/clickhouse/tables/{shard}/{db}/"
	zkAllPath   = "/clickhouse/tables/all/{db}/"
)

// shardedTables are the tables sharded by event_id; every other table is
// replicated on every node.
var shardedTables = map[string]bool{"decisions": true, "feedback": true, "decisions_by_time": true, "feedback_by_time": true}

// ShardedTables lists the tables that cluster mode shards by event_id
// (the others are replicated on every node), for documentation and tests.
func ShardedTables() []string {
	return []string{"decisions", "feedback", "decisions_by_time", "feedback_by_time"}
}

var (
	reCreateDatabase = regexp.MustCompile(`^CREATE DATABASE IF NOT EXISTS \{db\}$`)
	reCreateTable    = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS \{db\}\.(\w+) (\(.*\))\s*ENGINE = (\w*MergeTree)\(([^)]*)\)(.*)$`)
	reCreateView     = regexp.MustCompile(`(?s)^CREATE VIEW IF NOT EXISTS \{db\}\.(\w+) AS\b(.*)$`)
	reCreateMatView  = regexp.MustCompile(`(?s)^CREATE MATERIALIZED VIEW IF NOT EXISTS \{db\}\.(\w+) TO \{db\}\.(\w+) AS\b(.*) FROM \{db\}\.(\w+)$`)
	reInsertSelect   = regexp.MustCompile(`(?s)^INSERT INTO \{db\}\.\w+ \(.*\) SELECT .* FROM \{db\}\.\w+$`)
	reDropTable      = regexp.MustCompile(`^DROP TABLE IF EXISTS \{db\}\.(\w+)$`)
	reAlterTable     = regexp.MustCompile(`(?s)^ALTER TABLE (\w+)\.(\w+) (.*)$`)
)

// clusterForm returns the statements that do on every node of cluster what
// stmt, a statement of the single-server schema ({db} not yet in place),
// does on one server; an error for a statement it does not know how to
// distribute (TestEveryMigrationHasAClusterForm lists them all).
func clusterForm(stmt, cluster string) ([]string, error) {
	on := " ON CLUSTER " + cluster
	switch {
	case reCreateDatabase.MatchString(stmt):
		return []string{stmt + on}, nil
	case reCreateTable.MatchString(stmt):
		m := reCreateTable.FindStringSubmatch(stmt)
		table, cols, engine, args, rest := m[1], m[2], m[3], strings.TrimSpace(m[4]), m[5]
		local, path := table, zkAllPath+table
		if shardedTables[table] {
			local, path = table+localSuffix, zkShardPath+table+localSuffix
		}
		rargs := "'" + path + "', '{replica}'"
		if args != "" {
			rargs += ", " + args
		}
		out := []string{fmt.Sprintf("CREATE TABLE IF NOT EXISTS {db}.%s%s %s ENGINE = Replicated%s(%s)%s", local, on, cols, engine, rargs, rest)}
		if shardedTables[table] {
			out = append(out, distributedTable(table, cluster))
		}
		return out, nil
	case reCreateView.MatchString(stmt):
		m := reCreateView.FindStringSubmatch(stmt)
		return []string{"CREATE VIEW IF NOT EXISTS {db}." + m[1] + on + " AS" + m[2]}, nil
	case reCreateMatView.MatchString(stmt):
		// A materialized view fires on the inserts into the node's local
		// table, which only the shard's node that takes the insert gets
		// (a replica fetches the part instead), and writes to the local
		// table of its shard: each row once per shard, replicated from there.
		m := reCreateMatView.FindStringSubmatch(stmt)
		view, to, sel, from := m[1], m[2], m[3], m[4]
		if shardedTables[to] {
			to += localSuffix
		}
		if shardedTables[from] {
			from += localSuffix
		}
		return []string{fmt.Sprintf("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.%s%s TO {db}.%s AS%s FROM {db}.%s", view, on, to, sel, from)}, nil
	case reInsertSelect.MatchString(stmt):
		// Sent once, to the Distributed tables: the rows go to their shards.
		return []string{stmt}, nil
	case reDropTable.MatchString(stmt):
		table := reDropTable.FindStringSubmatch(stmt)[1]
		out := []string{stmt + on}
		if shardedTables[table] {
			out = append(out, "DROP TABLE IF EXISTS {db}."+table+localSuffix+on)
		}
		return out, nil
	}
	return nil, fmt.Errorf("no cluster form for the statement %.60q", stmt)
}

// distributedTable is the statement that creates the Distributed table
// table over its local tables on every node of cluster.
func distributedTable(table, cluster string) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS {db}.%s ON CLUSTER %s AS {db}.%s%s ENGINE = Distributed('%s', '{db}', '%s%s', %s)",
		table, cluster, table, localSuffix, cluster, table, localSuffix, shardingKey)
}

// clusterAlter rewrites an ALTER TABLE db.t of the single-server schema
// (optionalStatements) for the cluster: on the local tables of a sharded
// table, on every node. It says which sharded table it altered ("" for
// none): its Distributed table is then made again (18.16 runs no ALTER ON
// CLUSTER of a Distributed table on a cluster with replicated shards).
func clusterAlter(stmt, cluster string) (string, string, error) {
	m := reAlterTable.FindStringSubmatch(stmt)
	if m == nil {
		return "", "", fmt.Errorf("no cluster form for the statement %.60q", stmt)
	}
	db, table, rest := m[1], m[2], m[3]
	if shardedTables[table] {
		return fmt.Sprintf("ALTER TABLE %s.%s%s ON CLUSTER %s %s", db, table, localSuffix, cluster, rest), table, nil
	}
	return fmt.Sprintf("ALTER TABLE %s.%s ON CLUSTER %s %s", db, table, cluster, rest), "", nil
}

// The statements of cluster mode's own bookkeeping.
const (
	sqlClusterNodes = `SELECT host_name, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num, replica_num`
	sqlHasTable     = `SELECT count() FROM system.tables WHERE database = ? AND name = ?`
	sqlProfile      = `SELECT name, value FROM system.settings WHERE name IN ('load_balancing', 'distributed_product_mode')`
	// how many of the nodes (a remote() over all of them) have a column
	sqlNodesWithColumn = `SELECT count() FROM remote('%s', system.columns) WHERE database = ? AND table = ? AND name = ?`
)

// ClusterNodes returns the host:port of every node of cluster, as the
// server conn is connected to defines it, in shard and replica order.
func ClusterNodes(ctx context.Context, conn driver.Conn, cluster string) ([]string, error) {
	rows, err := conn.Query(ctx, sqlClusterNodes, cluster)
	if err != nil {
		return nil, fmt.Errorf("read system.clusters: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var host string
		var port uint16
		if err := rows.Scan(&host, &port); err != nil {
			return nil, fmt.Errorf("read system.clusters: %w", err)
		}
		out = append(out, fmt.Sprintf("%s:%d", host, port))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read system.clusters: %w", err)
	}
	return out, nil
}

func hasTable(ctx context.Context, conn driver.Conn, db, table string) (bool, error) {
	var n uint64
	err := conn.QueryRow(ctx, sqlHasTable, db, table).Scan(&n)
	return n > 0, err
}

// execAll sends each statement, {db} put in place.
func execAll(ctx context.Context, conn driver.Conn, db string, stmts []string) error {
	for _, s := range stmts {
		if err := conn.Exec(ctx, expand(s, db)); err != nil {
			return err
		}
	}
	return nil
}

// migrateCluster is migrate in cluster mode, on conn (database default).
func migrateCluster(ctx context.Context, conn driver.Conn, db string, c Config, upTo uint32) error {
	cluster := c.Cluster
	nodes, err := ClusterNodes(ctx, conn, cluster)
	if err != nil {
		return err
	}
	if len(nodes) == 0 {
		return fmt.Errorf("clickhouse.cluster: the server has no cluster %q in its <remote_servers>", cluster)
	}
	if rows, err := conn.Query(ctx, sqlProfile); err == nil {
		for rows.Next() {
			var name, value string
			if rows.Scan(&name, &value) == nil && value != wantProfile[name] {
				c.logger().Warn("ClickHouse cluster: the server's profile should set "+name+" to "+wantProfile[name]+" (docs/operations.md)",
					"setting", name, "value", value, "want", wantProfile[name])
			}
		}
		rows.Close()
	}
	// Once schema_migrations is on this node, a start with nothing to
	// migrate sends no DDL to the cluster (which waits for every node).
	if ok, err := hasTable(ctx, conn, db, "schema_migrations"); err != nil {
		return fmt.Errorf("read system.tables: %w", err)
	} else if !ok {
		for _, s := range []string{sqlCreateDatabase, sqlCreateSchemaMigrations} {
			stmts, err := clusterForm(s, cluster)
			if err == nil {
				err = execAll(ctx, conn, db, stmts)
			}
			if err != nil {
				return fmt.Errorf("create %s on cluster %s: %w", db, cluster, err)
			}
		}
	}
	return retryMigration(ctx, c, func() error { return migrateClusterOnce(ctx, conn, db, c, upTo, nodes) })
}

const (
	// migrationAttempts is how many times a migration is tried.
	migrationAttempts = 5
	// codeTimeoutExceeded is ClickHouse's TIMEOUT_EXCEEDED: a DDL some
	// node did not run within distributed_ddl_task_timeout.
	codeTimeoutExceeded = 159
)

func migrateClusterOnce(ctx context.Context, conn driver.Conn, db string, c Config, upTo uint32, nodes []string) error {
	cluster := c.Cluster
	applied, err := appliedMigrations(ctx, conn, db)
	if err != nil {
		return err
	}
	for _, m := range migrations {
		if applied[m.version] || m.version > upTo {
			continue
		}
		for _, col := range addedColumns[m.version] {
			if err := addClusterColumn(ctx, conn, db, cluster, nodes, col); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
		}
		for i, stmt := range m.statements {
			stmts, err := clusterForm(stmt, cluster)
			if err == nil {
				err = execAll(ctx, conn, db, stmts)
			}
			if err != nil {
				return fmt.Errorf("migration %d (%s) statement %d on cluster %s: %w", m.version, m.name, i+1, cluster, err)
			}
		}
		if err := conn.Exec(ctx, expand(sqlRecordMigration, db), m.version, m.name); err != nil {
			return fmt.Errorf("record migration %d: %w", m.version, err)
		}
	}
	form := func(stmt string) ([]string, error) { return clusterForm(stmt, cluster) }
	if err := ensureViews(ctx, conn, db, upTo, form); err != nil {
		return err
	}
	return applyOptional(ctx, conn, db, c)
}

// ensureViews creates, in their newest definition and in the form form
// gives them, the views this node lacks: a process that stopped between
// dropping a view and creating it again (another process having recorded
// the migration meanwhile) leaves none, and the next start puts it back.
func ensureViews(ctx context.Context, conn driver.Conn, db string, upTo uint32, form func(string) ([]string, error)) error {
	newest := map[string]string{}
	var order []string
	for _, m := range migrations {
		if m.version > upTo {
			break
		}
		for _, stmt := range m.statements {
			if v := reCreateView.FindStringSubmatch(stmt); v != nil {
				if _, seen := newest[v[1]]; !seen {
					order = append(order, v[1])
				}
				newest[v[1]] = stmt
			}
		}
	}
	for _, view := range order {
		ok, err := hasTable(ctx, conn, db, view)
		if err != nil || ok {
			if err != nil {
				return fmt.Errorf("read system.tables: %w", err)
			}
			continue
		}
		stmts, err := form(newest[view])
		if err == nil {
			err = execAll(ctx, conn, db, stmts)
		}
		if err != nil {
			return fmt.Errorf("create the view %s: %w", view, err)
		}
	}
	return nil
}

func appliedMigrations(ctx context.Context, conn driver.Conn, db string) (map[uint32]bool, error) {
	applied := map[uint32]bool{}
	rows, err := conn.Query(ctx, expand(sqlAppliedMigrations, db))
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		applied[v] = true
	}
	return applied, rows.Err()
}

// addClusterColumn adds col to its table on every node unless it is there:
// to the local tables of a sharded table (replicated ALTER, once per shard),
// then, once every node's local table has it, it makes the Distributed
// table again with it.
func addClusterColumn(ctx context.Context, conn driver.Conn, db, cluster string, nodes []string, col column) error {
	local := col
	if shardedTables[col.table] {
		local.table += localSuffix
	}
	has := func(table string) (bool, error) {
		var n uint64
		err := conn.QueryRow(ctx, sqlHasColumn, db, table, col.name).Scan(&n)
		return n > 0, err
	}
	if ok, err := has(local.table); err != nil {
		return err
	} else if !ok {
		stmt := fmt.Sprintf("ALTER TABLE %s.%s ON CLUSTER %s ADD COLUMN %s %s AFTER %s", db, local.table, cluster, col.name, col.typ, col.after)
		if err := conn.Exec(ctx, stmt); err != nil {
			if ok, _ := has(local.table); !ok {
				return fmt.Errorf("add column %s.%s: %w", local.table, col.name, err)
			}
		}
	}
	if !shardedTables[col.table] {
		return nil
	}
	if err := waitColumnEverywhere(ctx, conn, db, local.table, col.name, nodes); err != nil {
		return err
	}
	if ok, err := has(col.table); err != nil || ok {
		return err
	}
	return remakeDistributed(ctx, conn, db, cluster, col.table)
}

// remakeDistributed drops the Distributed table table and creates it again
// from its local tables, on every node.
func remakeDistributed(ctx context.Context, conn driver.Conn, db, cluster, table string) error {
	stmts := []string{"DROP TABLE IF EXISTS {db}." + table + " ON CLUSTER " + cluster, distributedTable(table, cluster)}
	if err := execAll(ctx, conn, db, stmts); err != nil {
		return fmt.Errorf("make the distributed table %s again: %w", table, err)
	}
	return nil
}

// waitColumnEverywhere waits until the local table on every node has the
// column: a replicated ALTER runs on one replica of each shard and reaches
// the others a moment later.
func waitColumnEverywhere(ctx context.Context, conn driver.Conn, db, table, name string, nodes []string) error {
	q := fmt.Sprintf(sqlNodesWithColumn, strings.Join(nodes, ","))
	deadline := time.Now().Add(3 * time.Minute)
	for {
		var n uint64
		err := conn.QueryRow(ctx, q, db, table, name).Scan(&n)
		if err == nil && int(n) >= len(nodes) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("column %s.%s is on %d of the cluster's %d nodes after 3 minutes (%v)", table, name, n, len(nodes), err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// clusterMigrationStatements lists the statements that migrate a fresh
// database on cluster, in order, {db} in place: what Migrate sends in
// cluster mode (without its reads), for the tests.
func clusterMigrationStatements(db, cluster string) ([]Statement, error) {
	var out []Statement
	add := func(name, stmt string) error {
		stmts, err := clusterForm(stmt, cluster)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for i, s := range stmts {
			out = append(out, Statement{Name: fmt.Sprintf("%s.%d", name, i+1), SQL: expand(s, db)})
		}
		return nil
	}
	if err := add("cluster.create_database", sqlCreateDatabase); err != nil {
		return nil, err
	}
	if err := add("cluster.schema_migrations", sqlCreateSchemaMigrations); err != nil {
		return nil, err
	}
	for _, m := range migrations {
		for _, c := range addedColumns[m.version] {
			t := c.table
			if shardedTables[t] {
				t += localSuffix
			}
			out = append(out, Statement{Name: fmt.Sprintf("cluster.%d.add_column", m.version),
				SQL: fmt.Sprintf("ALTER TABLE %s.%s ON CLUSTER %s ADD COLUMN %s %s AFTER %s", db, t, cluster, c.name, c.typ, c.after)})
			if shardedTables[c.table] {
				out = append(out,
					Statement{Name: fmt.Sprintf("cluster.%d.drop_distributed", m.version), SQL: expand("DROP TABLE IF EXISTS {db}."+c.table+" ON CLUSTER "+cluster, db)},
					Statement{Name: fmt.Sprintf("cluster.%d.make_distributed", m.version), SQL: expand(distributedTable(c.table, cluster), db)})
			}
		}
		for i, stmt := range m.statements {
			if err := add(fmt.Sprintf("cluster.%d.%d", m.version, i+1), stmt); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}
