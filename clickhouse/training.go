package clickhouse

// trainingStatements lists the statements of this file for Statements.
func trainingStatements(db string) []Statement { return nil }
