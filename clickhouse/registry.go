package clickhouse

// registryStatements lists the statements of this file for Statements.
func registryStatements(db string) []Statement { return nil }
