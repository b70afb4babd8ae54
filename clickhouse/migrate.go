package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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
		examplesView("action_ids", windowClosedCondition),
		rewardByVersionView,
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
		examplesView("action_ids", windowClosedCondition),
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
		examplesView("action_ids, action_keys", windowClosedCondition),
	}},
	{7, "views in the SQL of ClickHouse 18.16 and current releases", []string{
		// Views are stored as text: a database created before this
		// migration has views that current servers refuse (a joined
		// subquery without an alias) or answer differently (ANY INNER
		// JOIN keeps one row per key on both sides since 20.x). Both are
		// recreated from the definitions below.
		`DROP TABLE IF EXISTS {db}.reward_by_version`,
		`DROP TABLE IF EXISTS {db}.examples`,
		examplesView("action_ids, action_keys", windowClosedCondition),
		rewardByVersionView,
	}},
	{8, "installation id", []string{
		// The id of this installation, drawn by the first process that
		// migrates the database; the Kafka topics it uses are claimed
		// with it, so that another installation cannot use them too.
		`CREATE TABLE IF NOT EXISTS {db}.installation (
			id String,
			created_at DateTime,
			created_ms UInt64
		) ENGINE = MergeTree()
		ORDER BY (created_ms, id)`,
	}},
	{9, "label maturity that honours ingestion", []string{
		// Claims by ingest that everything appended to a topic before
		// through_ms is in ClickHouse (ingest/watermark.go); the largest
		// claim per stream is the watermark. A decision is closed only
		// once its reward window ends by the feedback watermark.
		`CREATE TABLE IF NOT EXISTS {db}.ingest_watermarks (
			stream String,
			topic String,
			partitions UInt32,
			through_ms UInt64,
			written_at DateTime
		) ENGINE = ReplacingMergeTree(through_ms)
		ORDER BY (stream, topic)`,
		// Claims by serve processes (source: one per spool directory),
		// read by ingest from the feedback topic, that every feedback
		// event they received before through_ms was in Kafka at sent_ms
		// (written once that is ingested too); a process silent past
		// valid_until_ms holds nothing back. Merges keep each source's
		// newest claim.
		`CREATE TABLE IF NOT EXISTS {db}.spool_watermarks (
			source String,
			through_ms UInt64,
			sent_ms UInt64,
			valid_until_ms UInt64,
			ingested_at DateTime
		) ENGINE = ReplacingMergeTree(through_ms)
		ORDER BY source`,
		`DROP TABLE IF EXISTS {db}.reward_by_version`,
		`DROP TABLE IF EXISTS {db}.examples`,
		examplesView("action_ids, action_keys", closedCondition9),
		rewardByVersionView,
	}},
	{10, "rollbacks that walk back", []string{
		// Which moves of a champion were rollbacks, and the seq of the
		// earlier move whose state each brought back: a second rollback
		// goes back past that one (deploy.Registry.Rollback).
		`CREATE TABLE IF NOT EXISTS {db}.rollbacks (
			name String,
			seq UInt64,
			restores_seq UInt64,
			ts DateTime
		) ENGINE = ReplacingMergeTree()
		ORDER BY (name, seq)`,
	}},
	{11, "deferred activation", []string{
		// decisions.deferred (added before these statements): a decision
		// made with defer_activation counts once activated; activations
		// are feedback of type flywheel.activation, which carry no reward.
		`DROP TABLE IF EXISTS {db}.reward_by_version`,
		`DROP TABLE IF EXISTS {db}.examples`,
		"CREATE VIEW IF NOT EXISTS {db}.examples AS\n\t\t" + examplesSelect("action_ids, action_keys", liveCondition11, windowDeadline, "", rewardFeedback),
		rewardByVersionView,
	}},
	{12, "late outcomes", []string{
		// decisions.reward_late_window_s (added before these statements,
		// 0 on every older decision): feedback up to that long after the
		// reward window re-scores the decision's example.
		`DROP TABLE IF EXISTS {db}.reward_by_version`,
		`DROP TABLE IF EXISTS {db}.examples`,
		"CREATE VIEW IF NOT EXISTS {db}.examples AS\n\t\t" + examplesSelect("action_ids, action_keys", liveCondition11, lateDeadline, "", rewardFeedback),
		rewardByVersionView,
	}},
	{13, "feedback names its model", []string{
		// feedback.model (added before these statements, '' on all older
		// feedback): feedback that names the model that decided counts for
		// that model's decision of the event id alone, so that two models'
		// decisions under one id do not share their feedback.
		`DROP TABLE IF EXISTS {db}.reward_by_version`,
		`DROP TABLE IF EXISTS {db}.examples`,
		"CREATE VIEW IF NOT EXISTS {db}.examples AS\n\t\t" + examplesSelectByModel("action_ids, action_keys", liveCondition11, liveCondition11, lateDeadline, "", rewardFeedback),
		rewardByVersionView,
	}},
	{14, "closed examples are final", []string{
		// A decision closes once the decisions watermark passes its
		// window's end too (ingest writes it from migration 14 on), so that
		// a decision is in before it counts as closed; and the feedback
		// deadlines are read from every decision, closed or not, so that a
		// watermark moving while the view is read cannot leave a decision
		// that closed meanwhile without its feedback.
		`DROP TABLE IF EXISTS {db}.reward_by_version`,
		`DROP TABLE IF EXISTS {db}.examples`,
		"CREATE VIEW IF NOT EXISTS {db}.examples AS\n\t\t" + examplesSelectByModel("action_ids, action_keys", liveCondition, "1", lateDeadline, "", rewardFeedback),
		rewardByVersionView,
	}},
	{15, "time-ordered companions", []string{
		// The decisions and the feedback again, in narrow tables sorted by
		// time: the queries of a recent range (the canary judge's, the
		// dashboard's: {recent}) read the range's granules, where the
		// tables sorted by event id make them read every row of the
		// model's months once merges have made a month one part.
		// Materialized views fill them on every insert; the INSERTs copy
		// what was there before (a row copied twice is stored once).
		decisionsByTimeTable,
		feedbackByTimeTable,
		"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.decisions_by_time_mv TO {db}.decisions_by_time AS\n\t\tSELECT " + decisionsByTimeColumns + " FROM {db}.decisions",
		"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.feedback_by_time_mv TO {db}.feedback_by_time AS\n\t\tSELECT " + feedbackByTimeColumns + " FROM {db}.feedback",
		"INSERT INTO {db}.decisions_by_time (" + decisionsByTimeColumns + ") SELECT " + decisionsByTimeColumns + " FROM {db}.decisions",
		"INSERT INTO {db}.feedback_by_time (" + feedbackByTimeColumns + ") SELECT " + feedbackByTimeColumns + " FROM {db}.feedback",
	}},
}

// The time-ordered companions of decisions and feedback (migration 15):
// the columns the recent reads need, sorted by time. A decision is one row
// of (model, ts_ms, event_id): ingest keeps one decision per model and
// event id, and a second delivery of it has its time. A feedback event
// delivered again at another time is two rows here (one in feedback): the
// recent reads keep the one ingested last, as FINAL does there.
const (
	decisionsByTimeColumns = "event_id, ts, ts_ms, model, kind, version, variant, explored, score, deferred, " +
		"reward_window_s, reward_late_window_s, reward_default, reward_aggregate, ingested_at"
	feedbackByTimeColumns = "event_id, feedback_id, ts, ts_ms, reward, type, model, ingested_at"
	decisionsByTimeTable  = `CREATE TABLE IF NOT EXISTS {db}.decisions_by_time (
			event_id String,
			ts DateTime,
			ts_ms UInt64,
			model String,
			kind String,
			version UInt32,
			variant String,
			explored UInt8,
			score Float64,
			deferred UInt8,
			reward_window_s UInt32,
			reward_late_window_s UInt32,
			reward_default Float64,
			reward_aggregate String,
			ingested_at DateTime
		) ENGINE = ReplacingMergeTree()
		PARTITION BY toYYYYMM(ts)
		ORDER BY (model, ts_ms, event_id)`
	feedbackByTimeTable = `CREATE TABLE IF NOT EXISTS {db}.feedback_by_time (
			event_id String,
			feedback_id String,
			ts DateTime,
			ts_ms UInt64,
			reward Float64,
			type String,
			model String,
			ingested_at DateTime
		) ENGINE = ReplacingMergeTree()
		PARTITION BY toYYYYMM(ts)
		ORDER BY (ts_ms, event_id, feedback_id)`
)

// addedColumns are the columns a migration adds to existing tables, before
// its statements, where they are missing (ClickHouse 18.16 has no ADD
// COLUMN IF NOT EXISTS).
var addedColumns = map[uint32][]column{
	6:  {{"decisions", "action_keys", "Array(String)", "action_ids"}},
	11: {{"decisions", "deferred", "UInt8", "explored"}},
	12: {{"decisions", "reward_late_window_s", "UInt32", "reward_aggregate"}},
	13: {{"feedback", "model", "String", "type"}},
}

type column struct{ table, name, typ, after string }

// The statements of the migrations' own bookkeeping.
const (
	sqlCreateDatabase         = `CREATE DATABASE IF NOT EXISTS {db}`
	sqlCreateSchemaMigrations = `CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
		version UInt32, name String, applied_at DateTime
	) ENGINE = ReplacingMergeTree() ORDER BY version`
	sqlAppliedMigrations = `SELECT version FROM {db}.schema_migrations`
	sqlRecordMigration   = `INSERT INTO {db}.schema_migrations (version, name, applied_at) SELECT ?, ?, now()`
	sqlHasColumn         = `SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?`
	sqlServerVersion     = `SELECT version()`
	sqlColumnTypes       = `SELECT table, name, type FROM system.columns WHERE database = ?`
)

// sql is the statement that adds c to db's table.
func (c column) sql(db string) string {
	return fmt.Sprintf("ALTER TABLE %s.%s ADD COLUMN %s %s AFTER %s", db, c.table, c.name, c.typ, c.after)
}

// addColumn adds c to db's table unless it is there; another process adding
// it at the same time is not an error.
func addColumn(ctx context.Context, conn driver.Conn, db string, c column) error {
	has := func() (bool, error) {
		var n uint64
		err := conn.QueryRow(ctx, sqlHasColumn, db, c.table, c.name).Scan(&n)
		return n > 0, err
	}
	if ok, err := has(); err != nil || ok {
		return err
	}
	if err := conn.Exec(ctx, c.sql(db)); err != nil {
		if ok, _ := has(); ok {
			return nil
		}
		return fmt.Errorf("add column %s.%s: %w", c.table, c.name, err)
	}
	return nil
}

// closedCondition9 is when a decision's example was closed from migration 9
// to 13, in SQL over the decisions table: its reward window has passed, and
// ingest has written all the feedback logged up to the window's end (the
// feedback watermark). The views of those migrations use it, as they did.
const closedCondition9 = `ts_ms + reward_window_s * 1000 <= least(toUInt64(toUInt32(now())) * 1000, ` + feedbackWatermark + `)`

// closedCondition is when a decision's example is closed, from migration 14
// on: its reward window ends by closedThrough, so that its decision and all
// the feedback logged up to the window's end are in ClickHouse, and a closed
// example never changes. The examples view and every count of closed
// examples use it, so they agree.
const closedCondition = `ts_ms + reward_window_s * 1000 <= ` + closedThrough

// closedByArg is closedCondition with closedThrough given as an argument
// (closedThroughMs, read once): the bounded reads of examples use it, so
// that their two reads of the decisions judge closing alike.
const closedByArg = `ts_ms + reward_window_s * 1000 <= ?`

// activatedCondition holds for a decision that may be trained on and
// evaluated: one made without defer_activation, or activated since (a
// feedback of type flywheel.activation for its event id or, for a slot of
// a page, EVENT_ID#SLOT, for its page's).
const activatedCondition = `(deferred = 0 OR splitByChar('#', event_id)[1] IN (SELECT event_id FROM {db}.feedback WHERE type = 'flywheel.activation'))`

// liveCondition11 is when a decision was an example from migration 11 to
// 13: closed and activated.
const liveCondition11 = closedCondition9 + ` AND ` + activatedCondition

// liveCondition is when a decision is an example, from migration 14 on:
// closed and activated.
const liveCondition = closedCondition + ` AND ` + activatedCondition

// liveByArg is liveCondition with closedThrough given as an argument.
const liveByArg = closedByArg + ` AND ` + activatedCondition

// rewardFeedback is the condition on the feedback that makes rewards:
// every type but activations.
const rewardFeedback = `
				WHERE type != 'flywheel.activation'`

// windowClosedCondition is what closed meant up to migration 8, when only
// the reward window counted: the views those migrations create (and replace)
// use it, as they did.
const windowClosedCondition = `ts_ms + reward_window_s * 1000 <= toUInt64(toUInt32(now())) * 1000`

// windowDeadline is, in SQL over the decisions table, until when a
// decision's feedback makes its reward up to migration 12: its reward
// window's end.
const windowDeadline = `ts_ms + reward_window_s * 1000`

// lateDeadline is windowDeadline from migration 12 on: the end of the
// decision's late window (reward.late_window) after its reward window, the
// same when it has none.
const lateDeadline = `ts_ms + (reward_window_s + reward_late_window_s) * 1000`

// examplesView is the examples view with actions as cols (columns of the
// decisions table) and closed (closedCondition) as the condition on a
// decision: each decision whose reward window has closed with the
// aggregate of its feedback inside the window, or the default reward.
//
// It aggregates only the feedback (narrow rows, joined with each decision's
// deadline) and joins that to the decisions, which stream through in blocks
// (grouping the wide decision rows would hold them in memory).
//
// The SQL is the common subset of ClickHouse 18.16 and current releases:
// every joined subquery has an alias, and each join's right side has one
// row per key (grouped by event_id), so ANY and ALL, and the ANY semantics
// of 18.16 and of 20.x and newer (any_join_distinct_right_table_keys), give
// the same rows; a decision with no feedback inside its window gets the
// default reward from feedback_count = 0, whatever join_use_nulls says.
func examplesView(actions, closed string) string {
	return "CREATE VIEW IF NOT EXISTS {db}.examples AS\n\t\t" + examplesSelect(actions, closed, windowDeadline, "", "")
}

// examplesSelect is the examples view's query, with deadline (windowDeadline
// or lateDeadline) the last time a decision's feedback counts, dcond added
// to the condition on the decisions it reads (both times) and fbcond to the
// feedback it reads (each "" or starting with a space).
func examplesSelect(actions, closed, deadline, dcond, fbcond string) string {
	return examplesSelectOf(examplesBefore13, actions, closed, deadline, dcond, fbcond)
}

// examplesSelectByModel is examplesSelect from migration 13 on: feedback
// that names its model (feedback.model) counts for that model's decision
// of the event id only; feedback that names none, for every model's. The
// read of the decisions' deadlines takes dlclosed as its condition instead
// of closed.
func examplesSelectByModel(actions, closed, dlclosed, deadline, dcond, fbcond string) string {
	return strings.NewReplacer("{dlclosed}", dlclosed).Replace(examplesSelectOf(examplesSince13, actions, closed, deadline, dcond, fbcond))
}

func examplesSelectOf(tmpl, actions, closed, deadline, dcond, fbcond string) string {
	return strings.NewReplacer("{actions}", actions, "{closed}", closed, "{deadline}", deadline, "{dcond}", dcond, "{fbcond}", fbcond).Replace(tmpl)
}

// rewardOfExample is an example's reward, from its decision's default and
// rule and the aggregates of its feedback (feedbackAggregates): the
// examples view's, and {recent}'s.
const rewardOfExample = `multiIf(
				feedback_count = 0, reward_default,
				reward_aggregate = 'first', f_first,
				reward_aggregate = 'last', f_last,
				reward_aggregate = 'max', f_max,
				f_sum) AS reward`

// feedbackAggregates are the aggregates of a decision's feedback that
// rewardOfExample reads.
const feedbackAggregates = `count() AS feedback_count,
				argMin(f_reward, f_ts_ms) AS f_first,
				argMax(f_reward, f_ts_ms) AS f_last,
				max(f_reward) AS f_max,
				sum(f_reward) AS f_sum`

// The examples' SQL before migration 13 (the views of migrations 5 to 12
// are made with it) and since.
const (
	examplesBefore13 = `SELECT
			event_id, ts, ts_ms, model, kind, version, variant, {actions}, probabilities, chosen, chosen_index,
			chosen_probability, explored, score, context_json, actions_json, context_names, context_values,
			context_numbers, feedback_count,
			` + rewardOfExample + `
		FROM
		(
			SELECT
				event_id, ts, ts_ms, model, kind, version, variant, {actions}, probabilities, chosen, chosen_index,
				chosen_probability, explored, score, context_json, actions_json, context_names, context_values,
				context_numbers, reward_default, reward_aggregate
			FROM {db}.decisions FINAL
			WHERE {closed}{dcond}
		) AS d
		ALL LEFT JOIN
		(
			SELECT
				event_id,
				` + feedbackAggregates + `
			FROM
			(
				SELECT event_id, ts_ms AS f_ts_ms, reward AS f_reward
				FROM {db}.feedback FINAL{fbcond}
			) AS fb
			ALL INNER JOIN
			(
				SELECT event_id, max({deadline}) AS deadline_ms
				FROM {db}.decisions FINAL
				WHERE {closed}{dcond}
				GROUP BY event_id
			) AS dl USING event_id
			WHERE f_ts_ms <= deadline_ms
			GROUP BY event_id
		) AS f USING event_id`
	examplesSince13 = `SELECT
			event_id, ts, ts_ms, model, kind, version, variant, {actions}, probabilities, chosen, chosen_index,
			chosen_probability, explored, score, context_json, actions_json, context_names, context_values,
			context_numbers, feedback_count,
			` + rewardOfExample + `
		FROM
		(
			SELECT
				event_id, ts, ts_ms, model, kind, version, variant, {actions}, probabilities, chosen, chosen_index,
				chosen_probability, explored, score, context_json, actions_json, context_names, context_values,
				context_numbers, reward_default, reward_aggregate
			FROM {db}.decisions FINAL
			WHERE {closed}{dcond}
		) AS d
		ALL LEFT JOIN
		(
			SELECT
				event_id, d_model AS model,
				` + feedbackAggregates + `
			FROM
			(
				SELECT event_id, model AS f_model, ts_ms AS f_ts_ms, reward AS f_reward
				FROM {db}.feedback FINAL{fbcond}
			) AS fb
			ALL INNER JOIN
			(
				SELECT event_id, model AS d_model, max({deadline}) AS deadline_ms
				FROM {db}.decisions FINAL
				WHERE {dlclosed}{dcond}
				GROUP BY event_id, model
			) AS dl USING event_id
			WHERE f_ts_ms <= deadline_ms AND (f_model = '' OR f_model = d_model)
			GROUP BY event_id, d_model
		) AS f USING (event_id, model)`
)

// rewardByVersionView is the reward rate, counts and feedback join rate of
// the closed examples per model, version, variant and hour.
const rewardByVersionView = `CREATE VIEW IF NOT EXISTS {db}.reward_by_version AS
		SELECT
			model, version, variant, toStartOfHour(ts) AS hour,
			count() AS decisions,
			sum(reward) AS reward_sum,
			avg(reward) AS reward_rate,
			countIf(feedback_count > 0) AS with_feedback,
			with_feedback / decisions AS join_rate
		FROM {db}.examples
		GROUP BY model, version, variant, hour`

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
	conn, err := c.open(ctx, o)
	if err != nil {
		return err
	}
	defer conn.Close()
	if c.Cluster != "" {
		return migrateCluster(ctx, conn, db, c, upTo)
	}
	if err := conn.Exec(ctx, expand(sqlCreateDatabase, db)); err != nil {
		return fmt.Errorf("create database %s: %w", db, err)
	}
	if err := conn.Exec(ctx, expand(sqlCreateSchemaMigrations, db)); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	return retryMigration(ctx, c, func() error { return migrateOnce(ctx, conn, db, c, upTo) })
}

// migrateOnce applies, on one server, the migrations not yet recorded.
func migrateOnce(ctx context.Context, conn driver.Conn, db string, c Config, upTo uint32) error {
	applied, err := appliedMigrations(ctx, conn, db)
	if err != nil {
		return err
	}
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
			if err := conn.Exec(ctx, expand(stmt, db)); err != nil {
				return fmt.Errorf("migration %d (%s) statement %d: %w", m.version, m.name, i+1, err)
			}
		}
		if err := conn.Exec(ctx, expand(sqlRecordMigration, db), m.version, m.name); err != nil {
			return fmt.Errorf("record migration %d: %w", m.version, err)
		}
	}
	if err := ensureViews(ctx, conn, db, upTo, oneServer); err != nil {
		return err
	}
	return applyOptional(ctx, conn, db, c)
}

// oneServer is a statement's form on one server: itself.
func oneServer(stmt string) ([]string, error) { return []string{stmt}, nil }

// retryMigration runs once until it succeeds, at most migrationAttempts
// times. Another process migrating at the same time can make a statement
// fail for a moment (a view created over a view or a table that the other
// is dropping to make it again): every statement is idempotent, so the
// migrations not yet recorded are applied again. A DDL some node of a
// cluster did not run in time is not waited for again.
func retryMigration(ctx context.Context, c Config, once func() error) error {
	for attempt := 1; ; attempt++ {
		err := once()
		var exc *ch.Exception
		if err == nil || attempt == migrationAttempts || ctx.Err() != nil || errors.As(err, &exc) && exc.Code == codeTimeoutExceeded {
			return err
		}
		c.logger().Warn("ClickHouse: migration failed; trying again", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt) * time.Second):
		}
	}
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
	"decisions":         {"model", "kind", "variant", "reward_aggregate"},
	"feedback":          {"type"},
	"decisions_by_time": {"model", "kind", "variant", "reward_aggregate"},
	"feedback_by_time":  {"type"},
}

// timedTables are the tables of events, each partitioned by month of ts:
// a retention applies to them all.
var timedTables = []string{"decisions", "feedback", "decisions_by_time", "feedback_by_time"}

// optionalStatements returns what the server of version v gets beyond the
// base schema (which runs on 18.16): LowCardinality columns and, with a
// retention, TTLs; types maps table.column to its current type, so that
// nothing is altered twice. skipped says what the server cannot have.
func optionalStatements(v serverVersion, db string, retention time.Duration, types map[string]string) (stmts, skipped []string) {
	if v.atLeast(19, 1) {
		for _, table := range timedTables {
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
			for _, table := range timedTables {
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

// applyOptional sends the optional statements the server gets; in cluster
// mode to every node, on the local tables.
func applyOptional(ctx context.Context, conn driver.Conn, db string, c Config) error {
	var vs string
	if err := conn.QueryRow(ctx, sqlServerVersion).Scan(&vs); err != nil {
		return fmt.Errorf("clickhouse version: %w", err)
	}
	v, err := parseVersion(vs)
	if err != nil {
		return err
	}
	log := c.logger()
	if checkVersion(v) {
		log.Info("ClickHouse server", "version", vs, "tested", OldestTested+" to "+NewestTested)
	} else {
		log.Warn("ClickHouse server outside the tested releases: the SQL may be refused or answer differently",
			"version", vs, "tested", OldestTested+" to "+NewestTested)
	}
	types := map[string]string{}
	rows, err := conn.Query(ctx, sqlColumnTypes, db)
	if err != nil {
		return fmt.Errorf("read column types: %w", err)
	}
	for rows.Next() {
		var table, name, typ string
		if err := rows.Scan(&table, &name, &typ); err != nil {
			rows.Close()
			return fmt.Errorf("read column types: %w", err)
		}
		if c.Cluster != "" {
			// the types of a sharded table are its local tables'
			if base, ok := strings.CutSuffix(table, localSuffix); ok && shardedTables[base] {
				table = base
			} else if shardedTables[table] {
				continue
			}
		}
		types[table+"."+name] = typ
	}
	rows.Close()
	stmts, skipped := optionalStatements(v, db, c.Retention, types)
	remake := map[string]bool{}
	for _, stmt := range stmts {
		if c.Cluster != "" {
			cs, table, err := clusterAlter(stmt, c.Cluster)
			if err != nil {
				return err
			}
			if table != "" && strings.Contains(stmt, " MODIFY COLUMN ") {
				remake[table] = true
			}
			stmt = cs
		}
		if err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	for _, table := range ShardedTables() {
		if remake[table] {
			if err := remakeDistributed(ctx, conn, db, c.Cluster, table); err != nil {
				return err
			}
		}
	}
	for _, what := range skipped {
		level := slog.LevelDebug // an optimisation the server lacks
		if strings.Contains(what, "retention") {
			level = slog.LevelWarn // asked for, and not done
		}
		log.Log(ctx, level, "ClickHouse feature not applied: this server lacks it", "version", vs, "feature", what)
	}
	return nil
}

// SchemaVersion returns the newest migration this build knows.
func SchemaVersion() uint32 { return migrations[len(migrations)-1].version }

// migrationStatements lists the statements that migrate a fresh database,
// in the order Migrate sends them, and the optional ones that a current
// server gets on top (since 19.1).
func migrationStatements(db string) []Statement {
	out := []Statement{
		{Name: "migrate.create_database", SQL: expand(sqlCreateDatabase, db)},
		{Name: "migrate.schema_migrations", SQL: expand(sqlCreateSchemaMigrations, db)},
		{Name: "migrate.applied", SQL: expand(sqlAppliedMigrations, db), Query: true},
	}
	for _, m := range migrations {
		for _, c := range addedColumns[m.version] {
			out = append(out,
				Statement{Name: fmt.Sprintf("migrate.%d.has_column", m.version), SQL: sqlHasColumn, Args: []any{db, c.table, c.name}, Query: true},
				Statement{Name: fmt.Sprintf("migrate.%d.add_column", m.version), SQL: c.sql(db)})
		}
		for i, stmt := range m.statements {
			out = append(out, Statement{Name: fmt.Sprintf("migrate.%d.%d", m.version, i+1), SQL: expand(stmt, db)})
		}
		out = append(out, Statement{Name: fmt.Sprintf("migrate.%d.record", m.version), SQL: expand(sqlRecordMigration, db), Args: []any{m.version, m.name}})
	}
	out = append(out,
		Statement{Name: "migrate.server_version", SQL: sqlServerVersion, Query: true, Varies: true},
		Statement{Name: "migrate.column_types", SQL: sqlColumnTypes, Args: []any{db}, Query: true, Varies: true})
	current := serverVersion{major: 99}
	// A retention long enough to keep any row a test writes.
	types := map[string]string{}
	for table, cols := range lowCardinality {
		for _, col := range cols {
			types[table+"."+col] = "String"
		}
	}
	stmts, _ := optionalStatements(current, db, 100*365*24*time.Hour, types)
	for i, stmt := range stmts {
		since := "19.1" // LowCardinality
		if strings.Contains(stmt, " TTL ") {
			since = "19.6"
		}
		out = append(out, Statement{Name: fmt.Sprintf("migrate.optional.%d", i+1), SQL: stmt, Since: since})
	}
	return out
}
