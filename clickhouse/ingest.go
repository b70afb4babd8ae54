package clickhouse

// ingestStatements lists the statements of this file for Statements.
func ingestStatements(db string) []Statement { return nil }
