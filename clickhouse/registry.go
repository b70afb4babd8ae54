package clickhouse

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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
	Seq             uint64 // orders the moves; written, not read back by Moves
	Actor           string
	Reason          string
}

// Registry keeps the model registry's rows: the versions (models table)
// and every move of every alias (deployments table). It only stores and
// reads rows; the rules (numbering, checksums, which moves are allowed) are
// the deploy package's. It is safe for concurrent use.
type Registry struct {
	conn driver.Conn
	db   string
}

// NewRegistry returns the registry tables of the migrated database db
// (Config.Database) on conn.
func NewRegistry(conn driver.Conn, db string) *Registry { return &Registry{conn: conn, db: db} }

// The registry's statements.
const (
	sqlLatestVersion = `SELECT max(version) FROM {db}.models WHERE name = ?`
	sqlInsertVersion = `INSERT INTO {db}.models (name, version, kind, created_at, artifact, sha256, manifest, metrics)`
	sqlVersion       = `SELECT kind, created_at, artifact, sha256, manifest, metrics FROM {db}.models FINAL WHERE name = ? AND version = ? LIMIT 1`
	sqlVersions      = `SELECT version, kind, created_at, sha256, length(artifact), manifest, metrics FROM {db}.models FINAL WHERE name = ? ORDER BY version DESC LIMIT ?`
	sqlAlias         = `SELECT argMax(version, seq) FROM {db}.deployments WHERE name = ? AND alias = ?`
	sqlInsertMove    = `INSERT INTO {db}.deployments (name, alias, version, previous_version, ts, seq, actor, reason) SELECT ?, ?, ?, ?, ?, ?, ?, ?`
	sqlMoves         = `SELECT alias, version, previous_version, ts, actor, reason FROM {db}.deployments WHERE name = ? ORDER BY seq DESC`
	sqlRecentMoves   = sqlMoves + ` LIMIT ?`
)

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

// InsertMove stores m as one row of the deployments table, or returns the
// error of the insert.
func (r *Registry) InsertMove(ctx context.Context, m AliasMove) error {
	err := r.conn.Exec(ctx, expand(sqlInsertMove, r.db),
		m.Name, m.Alias, uint32(m.Version), uint32(m.PreviousVersion), m.Time, m.Seq, m.Actor, m.Reason)
	if err != nil {
		return fmt.Errorf("record %s of %s to v%d: %w", m.Alias, m.Name, m.Version, err)
	}
	return nil
}

// Moves returns the latest limit alias moves of name (every one when limit
// is 0), newest first (Seq is not read), or the query's error.
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
		if err := rows.Scan(&m.Alias, &v, &pv, &m.Time, &m.Actor, &m.Reason); err != nil {
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
	}
}
