package clickhouse

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// ModelVersion is one row of the models table: a registered version of a
// model.
type ModelVersion struct {
	Name      string
	Version   int
	Kind      string
	CreatedAt time.Time
	Artifact  []byte // nil in the rows of Versions
	SHA256    string // hex, of the artifact as stored
	Size      int    // length of the artifact in bytes (not written by InsertVersion)
	Manifest  string // JSON
	Metrics   string // JSON
}

// AliasMove is one row of the deployments table: one move of an alias.
type AliasMove struct {
	Name            string
	Alias           string
	Version         int // 0: the alias was unset
	PreviousVersion int
	Time            time.Time
	// Seq orders the moves of a model's aliases: each move's is one more
	// than the newest before it, claimed (ClaimMove) so that no two moves
	// share one. Rows written before claims had the writer's clock in
	// nanoseconds; the first claimed seq continues after them.
	Seq    uint64
	Actor  string
	Reason string
	// Restores, set on a rollback, is the seq of the earlier champion
	// move whose state the rollback brings back (kept in the rollbacks
	// table, read back by Rollbacks).
	Restores uint64
}

// Claims: what a claim is of.
const (
	ClaimVersion = "v" // a version number of a model
	ClaimMove    = "s" // a seq of a model's alias moves
)

// Registry keeps the model registry's rows: the versions (models table)
// and every move of every alias (deployments table). It only stores and
// reads rows; the rules (numbering, checksums, which moves are allowed) are
// the deploy package's. It is safe for concurrent use.
type Registry struct {
	conn    driver.Conn
	db      string
	cluster string // Config.Cluster: claims are kept in ZooKeeper
}

// NewRegistry returns the registry tables of the migrated database db
// (Config.Database) on conn.
func NewRegistry(conn driver.Conn, db string) *Registry { return &Registry{conn: conn, db: db} }

// WithCluster returns the registry of a database migrated in cluster mode
// (Config.Cluster, "" for one server): its claims are made in the
// cluster's ZooKeeper, so that writers connected to different nodes never
// claim one number twice (Claim).
func (r *Registry) WithCluster(cluster string) *Registry {
	c := *r
	c.cluster = cluster
	return &c
}

// The registry's statements.
const (
	sqlLatestVersion = `SELECT max(version) FROM {db}.models WHERE name = ?`
	sqlInsertVersion = `INSERT INTO {db}.models (name, version, kind, created_at, artifact, sha256, manifest, metrics)`
	sqlVersion       = `SELECT kind, created_at, artifact, sha256, manifest, metrics FROM {db}.models FINAL WHERE name = ? AND version = ? LIMIT 1`
	sqlVersions      = `SELECT version, kind, created_at, sha256, length(artifact), manifest, metrics FROM {db}.models FINAL WHERE name = ? ORDER BY version DESC LIMIT ?`
	sqlAlias         = `SELECT argMax(version, seq) FROM {db}.deployments WHERE name = ? AND alias = ?`
	sqlInsertMove    = `INSERT INTO {db}.deployments (name, alias, version, previous_version, ts, seq, actor, reason) SELECT ?, ?, ?, ?, ?, ?, ?, ?`
	sqlMoves         = `SELECT alias, version, previous_version, ts, seq, actor, reason FROM {db}.deployments WHERE name = ? ORDER BY seq DESC`
	sqlRecentMoves   = sqlMoves + ` LIMIT ?`
	sqlLatestSeq     = `SELECT max(seq) FROM {db}.deployments WHERE name = ?`
	sqlHasVersion    = `SELECT count() FROM {db}.models WHERE name = ? AND version = ?`
	sqlHasMove       = `SELECT count() FROM {db}.deployments WHERE name = ? AND seq = ?`
	sqlInsertUndo    = `INSERT INTO {db}.rollbacks (name, seq, restores_seq, ts) SELECT ?, ?, ?, ?`
	sqlRollbacks     = `SELECT seq, restores_seq FROM {db}.rollbacks WHERE name = ? ORDER BY seq`
	// A claim is a table that exists, with no rows (the Null engine):
	// CREATE TABLE without IF NOT EXISTS succeeds for exactly one of the
	// processes that send it, which is the only compare-and-set ClickHouse
	// 18.16 has (it has no transactions, no conditional insert).
	sqlClaim   = "CREATE TABLE {db}.`{claim}` (claimed_at DateTime) ENGINE = Null"
	sqlRelease = "DROP TABLE IF EXISTS {db}.`{claim}`"
	// In cluster mode a claim is a replicated table whose ZooKeeper path
	// is the claim's and whose replica name is fixed: ZooKeeper creates
	// that replica once, whichever node is asked (the others answer
	// REPLICA_IS_ALREADY_EXIST). Its ZooKeeper node's czxid orders the
	// claims without a clock.
	sqlClaimZK  = "CREATE TABLE {db}.`{claim}` (claimed_at DateTime) ENGINE = ReplicatedMergeTree('{zk}/{n}', 'claim') ORDER BY claimed_at"
	sqlZKClaims = `SELECT name, czxid FROM system.zookeeper WHERE path = ?`
	sqlMyClaims = `SELECT name FROM system.tables WHERE database = ? AND startsWith(name, ?)`
)

// claimPrefix is the start of the names of the claim tables of what of
// name (claimTable without its number).
func claimPrefix(what, name string) string {
	return fmt.Sprintf("registry_claim_%s_%s", hex.EncodeToString([]byte(name)), what)
}

// zkClaims is the ZooKeeper node under which the claims of what of name
// are made in cluster mode, one child per number.
func (r *Registry) zkClaims(what, name string) string {
	return fmt.Sprintf("/clickhouse/flywheel_claims/%s/%s_%s", r.db, hex.EncodeToString([]byte(name)), what)
}

// claimTable is the name of the claim table of number n of what (a
// ClaimVersion or ClaimMove) of model name: the name is hex-encoded, so
// that any model name gives a valid, distinct table name.
func claimTable(what, name string, n uint64) string {
	return fmt.Sprintf("%s%d", claimPrefix(what, name), n)
}

func claimSQL(sql, db, what, name string, n uint64) string {
	return strings.ReplaceAll(expand(sql, db), "{claim}", claimTable(what, name, n))
}

// Claim claims number n of what (ClaimVersion or ClaimMove) of model name
// for this caller alone, and reports whether it did: of the processes that
// claim one number, at most one ever gets true, even when they claim it at
// the same time. It answers false, without an error, when another caller
// holds the claim or the number is taken (its row, a version of the models
// table or a move with that seq, is stored): the caller tries a higher
// number. After writing the row the caller Releases the claim. A caller
// that dies holding a claim leaves the number unused (a gap), never used
// twice. It returns the error of talking to the server, after which the
// claim may or may not be held (the number may be lost, never doubled).
//
// The claim is a table made with CREATE TABLE (without IF NOT EXISTS):
// ClickHouse creates a name once, under its per-table DDL guard, and refuses
// the rest (TABLE_ALREADY_EXISTS, or "is creating or attaching right now").
// A claim released after its row was written may be made again by a caller
// that chose its number earlier: the check of the row after the claim sends
// it on to the next number.
//
// In cluster mode (WithCluster) the claim is made in ZooKeeper (sqlClaimZK)
// on the node connected to, and checked against the claims of every node:
// a released number claimed again is recognised by a higher number claimed
// before it (a smaller czxid), since Release keeps the highest claim.
func (r *Registry) Claim(ctx context.Context, what, name string, n uint64) (bool, error) {
	check, arg := sqlHasVersion, any(uint32(n))
	switch what {
	case ClaimVersion:
		if n == 0 || n > math.MaxUint32 {
			return false, fmt.Errorf("claim version %d of %s: out of range", n, name)
		}
	case ClaimMove:
		check, arg = sqlHasMove, n
	default:
		return false, fmt.Errorf("claim %q of %s: unknown kind of claim", what, name)
	}
	if r.cluster != "" {
		return r.claimZK(ctx, what, name, n)
	}
	if err := r.conn.Exec(ctx, claimSQL(sqlClaim, r.db, what, name, n)); err != nil {
		if lostClaim(err) {
			return false, nil
		}
		return false, fmt.Errorf("claim %s%d of %s: %w", what, n, name, err)
	}
	var rows uint64
	if err := r.conn.QueryRow(ctx, expand(check, r.db), name, arg).Scan(&rows); err != nil {
		return false, fmt.Errorf("claim %s%d of %s: check its row: %w", what, n, name, err)
	}
	if rows > 0 { // written under an earlier claim, since released
		if err := r.Release(ctx, what, name, n); err != nil {
			return false, err
		}
		return false, nil
	}
	return true, nil
}

// lostClaim reports whether err is the server's refusal to create a claim
// table another caller has made, or is making.
func lostClaim(err error) bool {
	var ex *ch.Exception
	if errors.As(err, &ex) {
		return ex.Code == 57 /* TABLE_ALREADY_EXISTS */ || ex.Code == 253 /* REPLICA_IS_ALREADY_EXIST */ ||
			strings.Contains(ex.Message, "already exists") || strings.Contains(ex.Message, "right now")
	}
	return false
}

// zkClaimed returns the numbers claimed in ZooKeeper of what of name, with
// the czxid of each (none when nothing was ever claimed).
func (r *Registry) zkClaimed(ctx context.Context, what, name string) (map[uint64]int64, error) {
	rows, err := r.conn.Query(ctx, sqlZKClaims, r.zkClaims(what, name))
	if err != nil {
		var ex *ch.Exception
		if errors.As(err, &ex) && strings.Contains(ex.Message, "No node") {
			return nil, nil
		}
		return nil, fmt.Errorf("read the claims of %s: %w", name, err)
	}
	defer rows.Close()
	out := map[uint64]int64{}
	for rows.Next() {
		var child string
		var czxid int64
		if err := rows.Scan(&child, &czxid); err != nil {
			return nil, fmt.Errorf("read the claims of %s: %w", name, err)
		}
		var n uint64
		if _, err := fmt.Sscan(child, &n); err == nil {
			out[n] = czxid
		}
	}
	return out, rows.Err()
}

func (r *Registry) claimZK(ctx context.Context, what, name string, n uint64) (bool, error) {
	// Looking first spares a create that would fail: ClickHouse 18.16
	// leaves the data directory of a refused replicated table behind.
	claims, err := r.zkClaimed(ctx, what, name)
	if err != nil {
		return false, err
	}
	if _, taken := claims[n]; taken {
		return false, nil
	}
	sql := strings.NewReplacer("{zk}", r.zkClaims(what, name), "{n}", fmt.Sprint(n)).Replace(claimSQL(sqlClaimZK, r.db, what, name, n))
	if err := r.conn.Exec(ctx, sql); err != nil {
		if lostClaim(err) {
			return false, nil
		}
		return false, fmt.Errorf("claim %s%d of %s: %w", what, n, name, err)
	}
	if claims, err = r.zkClaimed(ctx, what, name); err != nil {
		return false, err
	}
	mine, ok := claims[n]
	if !ok { // released by a writer that claimed a higher number since
		return false, nil
	}
	for m, czxid := range claims {
		if m > n && czxid < mine { // n was claimed before, and released
			return false, r.drop(ctx, claimTable(what, name, n))
		}
	}
	return true, nil
}

func (r *Registry) drop(ctx context.Context, table string) error {
	if err := r.conn.Exec(ctx, "DROP TABLE IF EXISTS "+r.db+".`"+table+"`"); err != nil {
		return fmt.Errorf("release claim %s: %w", table, err)
	}
	return nil
}

// Release drops the claim of number n of what of name, once its row is
// stored, or returns the error of dropping it (a claim left behind is
// harmless: the number stays taken).
//
// In cluster mode the highest claim stays (Claim relies on it): Release
// drops the claims of what of name below n held on the node connected to.
func (r *Registry) Release(ctx context.Context, what, name string, n uint64) error {
	if r.cluster != "" {
		return r.releaseBelow(ctx, what, name, n)
	}
	if err := r.conn.Exec(ctx, claimSQL(sqlRelease, r.db, what, name, n)); err != nil {
		return fmt.Errorf("release claim %s%d of %s: %w", what, n, name, err)
	}
	return nil
}

func (r *Registry) releaseBelow(ctx context.Context, what, name string, n uint64) error {
	prefix := claimPrefix(what, name)
	rows, err := r.conn.Query(ctx, sqlMyClaims, r.db, prefix)
	if err != nil {
		return fmt.Errorf("release the claims of %s: %w", name, err)
	}
	var below []string
	for rows.Next() {
		var table string
		if err := rows.Scan(&table); err != nil {
			rows.Close()
			return fmt.Errorf("release the claims of %s: %w", name, err)
		}
		var m uint64
		if _, err := fmt.Sscan(strings.TrimPrefix(table, prefix), &m); err == nil && m < n {
			below = append(below, table)
		}
	}
	rows.Close()
	for _, table := range below {
		if err := r.drop(ctx, table); err != nil {
			return err
		}
	}
	return rows.Err()
}

// LatestSeq returns the highest seq of the moves of name's aliases, 0 if
// none, or the error of the query.
func (r *Registry) LatestSeq(ctx context.Context, name string) (uint64, error) {
	var s uint64
	if err := r.conn.QueryRow(ctx, expand(sqlLatestSeq, r.db), name).Scan(&s); err != nil {
		return 0, fmt.Errorf("latest move of %s: %w", name, err)
	}
	return s, nil
}

// Rollbacks returns, for every rollback of name's champion, the seq of its
// move and the seq of the move whose state it restored, or the query's
// error.
func (r *Registry) Rollbacks(ctx context.Context, name string) (map[uint64]uint64, error) {
	rows, err := r.conn.Query(ctx, expand(sqlRollbacks, r.db), name)
	if err != nil {
		return nil, fmt.Errorf("rollbacks of %s: %w", name, err)
	}
	defer rows.Close()
	out := map[uint64]uint64{}
	for rows.Next() {
		var seq, restores uint64
		if err := rows.Scan(&seq, &restores); err != nil {
			return nil, fmt.Errorf("scan rollbacks of %s: %w", name, err)
		}
		out[seq] = restores
	}
	return out, rows.Err()
}

// LatestVersion returns the highest stored version of name, 0 if none, or
// the error of the query.
func (r *Registry) LatestVersion(ctx context.Context, name string) (int, error) {
	var v uint32
	if err := r.conn.QueryRow(ctx, expand(sqlLatestVersion, r.db), name).Scan(&v); err != nil {
		return 0, fmt.Errorf("latest version of %s: %w", name, err)
	}
	return int(v), nil
}

// InsertVersion stores v (every field but Size) as one row of the models
// table, or returns the error of the insert.
func (r *Registry) InsertVersion(ctx context.Context, v ModelVersion) error {
	b, err := r.conn.PrepareBatch(ctx, expand(sqlInsertVersion, r.db))
	if err != nil {
		return fmt.Errorf("prepare models insert: %w", err)
	}
	if err := b.Append(v.Name, uint32(v.Version), v.Kind, v.CreatedAt, string(v.Artifact), v.SHA256, v.Manifest, v.Metrics); err != nil {
		b.Abort()
		return fmt.Errorf("append model row: %w", err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("insert model %s v%d: %w", v.Name, v.Version, err)
	}
	return nil
}

// Version returns version of name with its artifact, and false if there is
// no such row. It does not check the artifact against its SHA256.
func (r *Registry) Version(ctx context.Context, name string, version int) (ModelVersion, bool, error) {
	rows, err := r.conn.Query(ctx, expand(sqlVersion, r.db), name, uint32(version))
	if err != nil {
		return ModelVersion{}, false, fmt.Errorf("get %s v%d: %w", name, version, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return ModelVersion{}, false, fmt.Errorf("get %s v%d: %w", name, version, err)
		}
		return ModelVersion{}, false, nil
	}
	v := ModelVersion{Name: name, Version: version}
	var artifact string
	if err := rows.Scan(&v.Kind, &v.CreatedAt, &artifact, &v.SHA256, &v.Manifest, &v.Metrics); err != nil {
		return ModelVersion{}, false, fmt.Errorf("scan %s v%d: %w", name, version, err)
	}
	v.Artifact, v.Size = []byte(artifact), len(artifact)
	return v, true, nil
}

// Versions lists the newest limit versions of name (all of them when limit
// is 0), newest first, without their artifacts (Size says how long each
// is), or returns the query's error.
func (r *Registry) Versions(ctx context.Context, name string, limit int) ([]ModelVersion, error) {
	if limit <= 0 {
		limit = math.MaxUint32
	}
	rows, err := r.conn.Query(ctx, expand(sqlVersions, r.db), name, uint64(limit))
	if err != nil {
		return nil, fmt.Errorf("list versions of %s: %w", name, err)
	}
	defer rows.Close()
	var out []ModelVersion
	for rows.Next() {
		v := ModelVersion{Name: name}
		var ver uint32
		var size uint64
		if err := rows.Scan(&ver, &v.Kind, &v.CreatedAt, &v.SHA256, &size, &v.Manifest, &v.Metrics); err != nil {
			return nil, fmt.Errorf("scan versions of %s: %w", name, err)
		}
		v.Version, v.Size = int(ver), int(size)
		out = append(out, v)
	}
	return out, rows.Err()
}

// Alias returns the version of alias's newest move (by Seq), 0 if it never
// moved, or the query's error.
func (r *Registry) Alias(ctx context.Context, name, alias string) (int, error) {
	var v uint32
	if err := r.conn.QueryRow(ctx, expand(sqlAlias, r.db), name, alias).Scan(&v); err != nil {
		return 0, fmt.Errorf("alias %s of %s: %w", alias, name, err)
	}
	return int(v), nil
}

// InsertMove stores m as one row of the deployments table (and, for a
// rollback, its Restores in the rollbacks table, first), or returns the
// error of the insert.
func (r *Registry) InsertMove(ctx context.Context, m AliasMove) error {
	if m.Restores > 0 {
		if err := r.conn.Exec(ctx, expand(sqlInsertUndo, r.db), m.Name, m.Seq, m.Restores, m.Time); err != nil {
			return fmt.Errorf("record the rollback of %s to v%d: %w", m.Name, m.Version, err)
		}
	}
	err := r.conn.Exec(ctx, expand(sqlInsertMove, r.db),
		m.Name, m.Alias, uint32(m.Version), uint32(m.PreviousVersion), m.Time, m.Seq, m.Actor, m.Reason)
	if err != nil {
		return fmt.Errorf("record %s of %s to v%d: %w", m.Alias, m.Name, m.Version, err)
	}
	return nil
}

// Moves returns the latest limit alias moves of name (every one when limit
// is 0), newest first (by Seq; Restores is not read), or the query's error.
func (r *Registry) Moves(ctx context.Context, name string, limit int) ([]AliasMove, error) {
	sql, args := expand(sqlMoves, r.db), []any{name}
	if limit > 0 {
		sql, args = expand(sqlRecentMoves, r.db), []any{name, uint64(limit)}
	}
	rows, err := r.conn.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("history of %s: %w", name, err)
	}
	defer rows.Close()
	var out []AliasMove
	for rows.Next() {
		m := AliasMove{Name: name}
		var v, pv uint32
		if err := rows.Scan(&m.Alias, &v, &pv, &m.Time, &m.Seq, &m.Actor, &m.Reason); err != nil {
			return nil, fmt.Errorf("scan history of %s: %w", name, err)
		}
		m.Version, m.PreviousVersion = int(v), int(pv)
		out = append(out, m)
	}
	return out, rows.Err()
}

// registryStatements lists the statements of this file for Statements:
// the reads on the fixture's registry first, then a new version of each
// model and an alias move.
func registryStatements(db string) []Statement {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	sum := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }
	return []Statement{
		{Name: "registry.latest", SQL: expand(sqlLatestVersion, db), Args: []any{"homepage"}, Query: true},
		{Name: "registry.latest.none", SQL: expand(sqlLatestVersion, db), Args: []any{"nosuch"}, Query: true},
		{Name: "registry.get", SQL: expand(sqlVersion, db), Args: []any{"homepage", uint32(2)}, Query: true},
		{Name: "registry.get.classifier", SQL: expand(sqlVersion, db), Args: []any{"ctr", uint32(1)}, Query: true},
		{Name: "registry.get.missing", SQL: expand(sqlVersion, db), Args: []any{"homepage", uint32(9)}, Query: true},
		{Name: "registry.versions", SQL: expand(sqlVersions, db), Args: []any{"homepage", uint64(50)}, Query: true},
		{Name: "registry.alias.champion", SQL: expand(sqlAlias, db), Args: []any{"homepage", "champion"}, Query: true},
		{Name: "registry.alias.canary", SQL: expand(sqlAlias, db), Args: []any{"homepage", "canary"}, Query: true},
		{Name: "registry.alias.unset", SQL: expand(sqlAlias, db), Args: []any{"ctr", "canary"}, Query: true},
		{Name: "registry.history", SQL: expand(sqlMoves, db), Args: []any{"homepage"}, Query: true},
		{Name: "registry.history.recent", SQL: expand(sqlRecentMoves, db), Args: []any{"homepage", uint64(1)}, Query: true},
		{Name: "registry.insert_version", SQL: expand(sqlInsertVersion, db), Rows: [][]any{
			{"homepage", uint32(3), "ranker", at, "homepage v3 artifact", sum("homepage v3 artifact"), `{"rows":5}`, `{}`},
			{"ctr", uint32(2), "classifier", at, "ctr v2 artifact", sum("ctr v2 artifact"), `{"rows":7}`, `{"auc":0.61}`},
		}},
		{Name: "registry.move", SQL: expand(sqlInsertMove, db),
			Args: []any{"homepage", "canary", uint32(3), uint32(0), at, uint64(at.UnixNano()), "retrain", "passed the gate"}},
		{Name: "registry.history.after_move", SQL: expand(sqlMoves, db), Args: []any{"homepage"}, Query: true},
		{Name: "registry.latest_seq", SQL: expand(sqlLatestSeq, db), Args: []any{"homepage"}, Query: true},
		{Name: "registry.latest_seq.none", SQL: expand(sqlLatestSeq, db), Args: []any{"nosuch"}, Query: true},
		{Name: "registry.claim.version", SQL: claimSQL(sqlClaim, db, ClaimVersion, "homepage", 4)},
		{Name: "registry.claim.version.row", SQL: expand(sqlHasVersion, db), Args: []any{"homepage", uint32(4)}, Query: true},
		{Name: "registry.release.version", SQL: claimSQL(sqlRelease, db, ClaimVersion, "homepage", 4)},
		{Name: "registry.claim.move", SQL: claimSQL(sqlClaim, db, ClaimMove, "homepage", uint64(at.UnixNano())+1)},
		{Name: "registry.claim.move.row", SQL: expand(sqlHasMove, db), Args: []any{"homepage", uint64(at.UnixNano()) + 1}, Query: true},
		{Name: "registry.rollback", SQL: expand(sqlInsertUndo, db), Args: []any{"homepage", uint64(at.UnixNano()) + 1, uint64(at.UnixNano()), at}},
		{Name: "registry.rollback.move", SQL: expand(sqlInsertMove, db),
			Args: []any{"homepage", "champion", uint32(1), uint32(2), at, uint64(at.UnixNano()) + 1, "test", "rolled back"}},
		{Name: "registry.release.move", SQL: claimSQL(sqlRelease, db, ClaimMove, "homepage", uint64(at.UnixNano())+1)},
		{Name: "registry.rollbacks", SQL: expand(sqlRollbacks, db), Args: []any{"homepage"}, Query: true},
		{Name: "registry.claims.local", SQL: sqlMyClaims, Args: []any{db, claimPrefix(ClaimVersion, "homepage")}, Query: true},
	}
}
