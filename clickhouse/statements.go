package clickhouse

import "strings"

// Statement is one SQL statement the product sends, with representative
// arguments, as Statements lists them for the compatibility tests.
type Statement struct {
	// Name says who sends it and why, e.g. "registry.latest".
	Name string
	// SQL is the statement with the database name in place and ? for each
	// argument, exactly as the product sends it.
	SQL string
	// Args are representative arguments, one for each ?, that make sense
	// on the fixture data set of the compatibility test (models
	// "homepage", a ranker, and "ctr", a classifier).
	Args []any
	// Rows, for a batch insert (SQL is then "INSERT INTO t (columns)"),
	// are representative rows, one value for each column.
	Rows [][]any
	// Query is true for a statement that returns rows, whose answer the
	// compatibility test compares across servers.
	Query bool
	// Varies is true for a query whose answer depends on the server
	// (its version, its system tables): run everywhere, not compared.
	Varies bool
	// Since, when set, is the oldest ClickHouse release (major.minor) the
	// statement is sent to: an optional feature older servers lack.
	Since string
}

// Statements returns every statement the product sends to database db, with
// representative arguments: the migrations of a fresh database, in order,
// then every statement of ingest, retrain, the registry, the canary judge
// and the dashboard.
func Statements(db string) []Statement {
	var out []Statement
	for _, group := range [][]Statement{
		migrationStatements(db),
		ingestStatements(db),
		watermarkStatements(db),
		trainingStatements(db),
		decisionStatements(db),
		registryStatements(db),
		judgeStatements(db),
		dashboardStatements(db),
		installationStatements(db),
	} {
		out = append(out, group...)
	}
	return out
}

// expand puts the bounded examples query (examplesOfModel) in place of
// {examples} in sql and the recent one (recentExamples) in place of
// {recent}, then database db in place of {db}.
func expand(sql, db string) string {
	if strings.Contains(sql, "{examples}") {
		sql = strings.ReplaceAll(sql, "{examples}", examplesOfModel())
	}
	sql = strings.ReplaceAll(sql, "{recent}", recentExamples)
	return strings.ReplaceAll(sql, "{db}", db)
}
