package clickhouse

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// migration is one step of the schema. Every statement is idempotent on its
// own (IF NOT EXISTS), and applied versions are recorded in
// schema_migrations, so Migrate can run at every start of every process.
type migration struct {
	version    uint32
	name       string
	statements []string
}

// {db} in a statement is replaced by the database name.
var migrations = []migration{
	{1, "decisions and feedback", []string{
		`CREATE TABLE IF NOT EXISTS {db}.decisions (
			event_id String,
			ts DateTime,
			ts_ms UInt64,
			model String,
			kind String,
			version UInt32,
			variant String,
			context_names Array(String),
			context_values Array(String),
			context_numbers Array(Float64),
			action_ids Array(String),
			probabilities Array(Float64),
			chosen String,
			chosen_index UInt16,
			chosen_probability Float64,
			chosen_names Array(String),
			chosen_values Array(String),
			chosen_numbers Array(Float64),
			explored UInt8,
			score Float64,
			reward_window_s UInt32,
			reward_default Float64,
			reward_aggregate String,
			context_json String,
			actions_json String,
			ingested_at DateTime
		) ENGINE = ReplacingMergeTree()
		PARTITION BY toYYYYMM(ts)
		ORDER BY (model, event_id)`,
		`CREATE TABLE IF NOT EXISTS {db}.feedback (
			event_id String,
			feedback_id String,
			ts DateTime,
			ts_ms UInt64,
			reward Float64,
			type String,
			ingested_at DateTime
		) ENGINE = ReplacingMergeTree()
		PARTITION BY toYYYYMM(ts)
		ORDER BY (event_id, feedback_id)`,
	}},
	{2, "model registry and deployments", []string{
		`CREATE TABLE IF NOT EXISTS {db}.models (
			name String,
			version UInt32,
			kind String,
			created_at DateTime,
			artifact String,
			sha256 String,
			manifest String,
			metrics String
		) ENGINE = ReplacingMergeTree()
		ORDER BY (name, version)`,
		`CREATE TABLE IF NOT EXISTS {db}.deployments (
			name String,
			alias String,
			version UInt32,
			previous_version UInt32,
			ts DateTime,
			seq UInt64,
			actor String,
			reason String
		) ENGINE = MergeTree()
		ORDER BY (name, alias, seq)`,
	}},
	{3, "analyst views", []string{
		// examples: each decision whose reward window has closed, joined with
		// the feedback that arrived inside the window, aggregated by the
		// decision's own reward rule; the default reward when none came.
		`CREATE VIEW IF NOT EXISTS {db}.examples AS
		SELECT
			event_id,
			any(d_ts) AS ts,
			any(d_ts_ms) AS ts_ms,
			any(d_model) AS model,
			any(d_kind) AS kind,
			any(d_version) AS version,
			any(d_variant) AS variant,
			any(d_action_ids) AS action_ids,
			any(d_probabilities) AS probabilities,
			any(d_chosen) AS chosen,
			any(d_chosen_index) AS chosen_index,
			any(d_chosen_probability) AS chosen_probability,
			any(d_explored) AS explored,
			any(d_score) AS score,
			any(d_context_json) AS context_json,
			any(d_actions_json) AS actions_json,
			any(d_context_names) AS context_names,
			any(d_context_values) AS context_values,
			any(d_context_numbers) AS context_numbers,
			countIf(f_id != '' AND f_ts_ms <= d_deadline_ms) AS feedback_count,
			multiIf(
				feedback_count = 0, any(d_reward_default),
				any(d_reward_aggregate) = 'first', argMinIf(f_reward, f_ts_ms, f_id != '' AND f_ts_ms <= d_deadline_ms),
				any(d_reward_aggregate) = 'last', argMaxIf(f_reward, f_ts_ms, f_id != '' AND f_ts_ms <= d_deadline_ms),
				any(d_reward_aggregate) = 'max', maxIf(f_reward, f_id != '' AND f_ts_ms <= d_deadline_ms),
				sumIf(f_reward, f_id != '' AND f_ts_ms <= d_deadline_ms)) AS reward
		FROM
		(
			SELECT
				event_id,
				ts AS d_ts, ts_ms AS d_ts_ms, model AS d_model, kind AS d_kind, version AS d_version,
				variant AS d_variant, action_ids AS d_action_ids, probabilities AS d_probabilities,
				chosen AS d_chosen, chosen_index AS d_chosen_index, chosen_probability AS d_chosen_probability,
				explored AS d_explored, score AS d_score, context_json AS d_context_json,
				actions_json AS d_actions_json, context_names AS d_context_names,
				context_values AS d_context_values, context_numbers AS d_context_numbers,
				reward_default AS d_reward_default, reward_aggregate AS d_reward_aggregate,
				ts_ms + reward_window_s * 1000 AS d_deadline_ms
			FROM {db}.decisions FINAL
			WHERE ts_ms + reward_window_s * 1000 <= toUInt64(toUInt32(now())) * 1000
		)
		ALL LEFT JOIN
		(
			SELECT event_id, feedback_id AS f_id, ts_ms AS f_ts_ms, reward AS f_reward
			FROM {db}.feedback FINAL
		) USING event_id
		GROUP BY event_id`,
		`CREATE VIEW IF NOT EXISTS {db}.reward_by_version AS
		SELECT
			model, version, variant, toStartOfHour(ts) AS hour,
			count() AS decisions,
			sum(reward) AS reward_sum,
			avg(reward) AS reward_rate,
			countIf(feedback_count > 0) AS with_feedback,
			with_feedback / decisions AS join_rate
		FROM {db}.examples
		GROUP BY model, version, variant, hour`,
	}},
	{4, "retrain runs and reference rewards", []string{
		// every retrain run, skipped ones included, with its outcome, reason
		// and the evaluation of the candidate against the champion (JSON)
		`CREATE TABLE IF NOT EXISTS {db}.retrain_runs (
			model String,
			started_at DateTime,
			started_ms UInt64,
			took_ms UInt64,
			outcome String,
			reason String,
			version UInt32,
			champion UInt32,
			train_rows UInt64,
			holdout_rows UInt64,
			comparison String
		) ENGINE = MergeTree()
		PARTITION BY toYYYYMM(started_at)
		ORDER BY (model, started_ms)`,
		// reference reward rates (random, best known) that a simulator or a
		// person supplies, drawn as lines next to the versions' rewards
		`CREATE TABLE IF NOT EXISTS {db}.model_references (
			model String,
			name String,
			value Float64,
			source String,
			ts DateTime,
			ts_ms UInt64
		) ENGINE = ReplacingMergeTree(ts_ms)
		ORDER BY (model, name)`,
	}},
	{5, "examples without grouping the decisions", []string{
		`DROP TABLE IF EXISTS {db}.examples`,
		examplesView("action_ids"),
	}},
	{6, "actions stored once", []string{
		// Each distinct action (its id and features, as logged) once, by a
		// hash of its JSON: a catalogue's items recur in decision after
		// decision, and storing them in every decision was most of what
		// ingest wrote. A decision keeps its actions' keys, in order.
		// seen_at is when ingest last wrote the action (it writes it again
		// now and then while the action is in use): the newest row stays.
		`CREATE TABLE IF NOT EXISTS {db}.actions (
			action_key String,
			action_id String,
			action_json String,
			seen_at DateTime
		) ENGINE = ReplacingMergeTree(seen_at)
		ORDER BY action_key`,
		`DROP TABLE IF EXISTS {db}.examples`,
		examplesView("action_ids, action_keys"),
	}},
}

// addedColumns are the columns a migration adds to existing tables, before
// its statements, where they are missing (ClickHouse 18.16 has no ADD
// COLUMN IF NOT EXISTS).
var addedColumns = map[uint32][]column{
	6: {{"decisions", "action_keys", "Array(String)", "action_ids"}},
}

type column struct{ table, name, typ, after string }

// addColumn adds c to db's table unless it is there; another process adding
// it at the same time is not an error.
func addColumn(ctx context.Context, conn driver.Conn, db string, c column) error {
	has := func() (bool, error) {
		var n uint64
		err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?", db, c.table, c.name).Scan(&n)
		return n > 0, err
	}
	if ok, err := has(); err != nil || ok {
		return err
	}
	err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s ADD COLUMN %s %s AFTER %s", db, c.table, c.name, c.typ, c.after))
	if err != nil {
		if ok, _ := has(); ok {
			return nil
		}
		return fmt.Errorf("add column %s.%s: %w", c.table, c.name, err)
	}
	return nil
}

// examplesView is the examples view with actions as cols (columns of the
// decisions table): each decision whose reward window has closed with the
// aggregate of its feedback inside the window, or the default reward.
//
// The first examples view (migration 3) grouped every decision with its
// feedback, wide columns and all: ClickHouse 18.16 then returns the result as
// one block held in memory on both sides. This one aggregates only the
// feedback (narrow rows, joined with each decision's deadline) and joins
// that to the decisions, which stream through in blocks.
func examplesView(actions string) string {
	return strings.ReplaceAll(`CREATE VIEW IF NOT EXISTS {db}.examples AS
		SELECT
			event_id, ts, ts_ms, model, kind, version, variant, {actions}, probabilities, chosen, chosen_index,
			chosen_probability, explored, score, context_json, actions_json, context_names, context_values,
			context_numbers, feedback_count,
			multiIf(
				feedback_count = 0, reward_default,
				reward_aggregate = 'first', f_first,
				reward_aggregate = 'last', f_last,
				reward_aggregate = 'max', f_max,
				f_sum) AS reward
		FROM
		(
			SELECT
				event_id, ts, ts_ms, model, kind, version, variant, {actions}, probabilities, chosen, chosen_index,
				chosen_probability, explored, score, context_json, actions_json, context_names, context_values,
				context_numbers, reward_default, reward_aggregate
			FROM {db}.decisions FINAL
			WHERE ts_ms + reward_window_s * 1000 <= toUInt64(toUInt32(now())) * 1000
		)
		ANY LEFT JOIN
		(
			SELECT
				event_id,
				count() AS feedback_count,
				argMin(f_reward, f_ts_ms) AS f_first,
				argMax(f_reward, f_ts_ms) AS f_last,
				max(f_reward) AS f_max,
				sum(f_reward) AS f_sum
			FROM
			(
				SELECT event_id, ts_ms AS f_ts_ms, reward AS f_reward
				FROM {db}.feedback FINAL
			)
			ANY INNER JOIN
			(
				SELECT event_id, ts_ms + reward_window_s * 1000 AS deadline_ms
				FROM {db}.decisions FINAL
				WHERE ts_ms + reward_window_s * 1000 <= toUInt64(toUInt32(now())) * 1000
			) USING event_id
			WHERE f_ts_ms <= deadline_ms
			GROUP BY event_id
		) USING event_id`, "{actions}", actions)
}

// Migrate creates the database if needed and applies every migration not yet
// recorded in schema_migrations. It is safe to run again and from several
// processes at once (each statement is idempotent).
func Migrate(ctx context.Context, c Config) error {
	return migrate(ctx, c, SchemaVersion())
}

// migrate applies the migrations up to version upTo.
func migrate(ctx context.Context, c Config, upTo uint32) error {
	o, err := c.Options()
	if err != nil {
		return err
	}
	db := o.Auth.Database
	o.Auth.Database = "default"
	conn, err := ch.Open(o)
	if err != nil {
		return fmt.Errorf("open clickhouse: %w", err)
	}
	defer conn.Close()
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+db); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	if err := conn.Exec(ctx, strings.ReplaceAll(`CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
		version UInt32, name String, applied_at DateTime
	) ENGINE = ReplacingMergeTree() ORDER BY version`, "{db}", db)); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	applied := map[uint32]bool{}
	rows, err := conn.Query(ctx, "SELECT version FROM "+db+".schema_migrations")
	if err != nil {
		return fmt.Errorf("read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		applied[v] = true
	}
	rows.Close()
	for _, m := range migrations {
		if applied[m.version] || m.version > upTo {
			continue
		}
		for _, c := range addedColumns[m.version] {
			if err := addColumn(ctx, conn, db, c); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.version, m.name, err)
			}
		}
		for i, stmt := range m.statements {
			if err := conn.Exec(ctx, strings.ReplaceAll(stmt, "{db}", db)); err != nil {
				return fmt.Errorf("migration %d (%s) statement %d: %w", m.version, m.name, i+1, err)
			}
		}
		if err := conn.Exec(ctx, "INSERT INTO "+db+".schema_migrations (version, name, applied_at) SELECT ?, ?, now()", m.version, m.name); err != nil {
			return fmt.Errorf("record migration %d: %w", m.version, err)
		}
	}
	return applyOptional(ctx, conn, db, c)
}

// serverVersion is a ClickHouse release as major.minor.
type serverVersion struct{ major, minor int }

func (v serverVersion) atLeast(major, minor int) bool {
	return v.major > major || v.major == major && v.minor >= minor
}

func parseVersion(s string) (serverVersion, error) {
	var v serverVersion
	if _, err := fmt.Sscanf(s, "%d.%d", &v.major, &v.minor); err != nil {
		return v, fmt.Errorf("clickhouse version %q: %w", s, err)
	}
	return v, nil
}

// lowCardinality are the columns with few distinct values: stored as
// LowCardinality(String) where the server has it (19.1 and newer).
var lowCardinality = map[string][]string{
	"decisions": {"model", "kind", "variant", "reward_aggregate"},
	"feedback":  {"type"},
}

// optionalStatements returns what the server of version v gets beyond the
// base schema (which runs on 18.16): LowCardinality columns and, with a
// retention, TTLs; types maps table.column to its current type, so that
// nothing is altered twice. skipped says what the server cannot have.
func optionalStatements(v serverVersion, db string, retention time.Duration, types map[string]string) (stmts, skipped []string) {
	if v.atLeast(19, 1) {
		for _, table := range []string{"decisions", "feedback"} {
			for _, col := range lowCardinality[table] {
				if types[table+"."+col] == "String" {
					stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s.%s MODIFY COLUMN %s LowCardinality(String)", db, table, col))
				}
			}
		}
	} else {
		skipped = append(skipped, "LowCardinality columns (ClickHouse 19.1+)")
	}
	if retention > 0 {
		days := int((retention + 24*time.Hour - 1) / (24 * time.Hour))
		if v.atLeast(19, 6) {
			for _, table := range []string{"decisions", "feedback"} {
				stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s.%s MODIFY TTL ts + INTERVAL %d DAY", db, table, days))
			}
			// An action outlives the decisions that name it: ingest writes
			// it again at least daily while it is in use.
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s.actions MODIFY TTL seen_at + INTERVAL %d DAY", db, days+2))
		} else {
			skipped = append(skipped, fmt.Sprintf("clickhouse.retention of %d days (TTL needs ClickHouse 19.6+; drop old monthly partitions instead)", days))
		}
	}
	return stmts, skipped
}

func applyOptional(ctx context.Context, conn driver.Conn, db string, c Config) error {
	var vs string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&vs); err != nil {
		return fmt.Errorf("clickhouse version: %w", err)
	}
	v, err := parseVersion(vs)
	if err != nil {
		return err
	}
	types := map[string]string{}
	rows, err := conn.Query(ctx, "SELECT table, name, type FROM system.columns WHERE database = ?", db)
	if err != nil {
		return fmt.Errorf("read column types: %w", err)
	}
	for rows.Next() {
		var table, name, typ string
		if err := rows.Scan(&table, &name, &typ); err != nil {
			rows.Close()
			return fmt.Errorf("read column types: %w", err)
		}
		types[table+"."+name] = typ
	}
	rows.Close()
	stmts, skipped := optionalStatements(v, db, c.Retention, types)
	for _, stmt := range stmts {
		if err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	for _, what := range skipped {
		level := slog.LevelDebug // an optimisation the server lacks
		if strings.Contains(what, "retention") {
			level = slog.LevelWarn // asked for, and not done
		}
		slog.Default().Log(ctx, level, "ClickHouse feature not applied: this server lacks it", "version", vs, "feature", what)
	}
	return nil
}

// SchemaVersion returns the newest migration this build knows.
func SchemaVersion() uint32 { return migrations[len(migrations)-1].version }

// migrationStatements lists the statements that migrate a fresh database.
func migrationStatements(db string) []Statement { return nil }
