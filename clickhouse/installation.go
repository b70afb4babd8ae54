package clickhouse

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// The installation table holds the id that the first process to migrate a
// database drew for it; the Kafka topics an installation uses carry that id
// (kafka.Claim), so that two installations cannot share topics by accident.
const (
	sqlInstallationIDs = `SELECT id FROM {db}.installation ORDER BY created_ms, id`
	sqlAddInstallation = `INSERT INTO {db}.installation (id, created_at, created_ms) SELECT ?, ?, ?`
)

// Installation reads and draws the id of an installation.
type Installation struct {
	conn driver.Conn
	db   string
	now  func() time.Time
}

// NewInstallation returns the installation of database db over conn.
func NewInstallation(conn driver.Conn, db string, now func() time.Time) *Installation {
	if now == nil {
		now = time.Now
	}
	return &Installation{conn: conn, db: db, now: now}
}

// ID returns the installation's id, drawing one when the database has none.
// Two processes migrating a new database at once may both draw one: ID is
// then the older (every process agrees once both are written), and IDs
// lists both.
func (in *Installation) ID(ctx context.Context) (string, error) {
	ids, err := in.IDs(ctx)
	if err != nil {
		return "", err
	}
	if len(ids) > 0 {
		return ids[0], nil
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("draw an installation id: %w", err)
	}
	at := in.now().UTC()
	if err := in.conn.Exec(ctx, expand(sqlAddInstallation, in.db), hex.EncodeToString(b[:]), at, uint64(at.UnixMilli())); err != nil {
		return "", fmt.Errorf("store the installation id: %w", err)
	}
	if ids, err = in.IDs(ctx); err != nil {
		return "", err
	}
	if len(ids) == 0 {
		return "", fmt.Errorf("the installation id written to %s.installation is not there", in.db)
	}
	return ids[0], nil
}

// IDs returns every id drawn for the installation, oldest first.
func (in *Installation) IDs(ctx context.Context) ([]string, error) {
	rows, err := in.conn.Query(ctx, expand(sqlInstallationIDs, in.db))
	if err != nil {
		return nil, fmt.Errorf("read the installation id: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read the installation id: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// installationStatements lists the installation's statements.
func installationStatements(db string) []Statement {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return []Statement{
		{Name: "installation.ids.empty", SQL: expand(sqlInstallationIDs, db), Query: true},
		{Name: "installation.add", SQL: expand(sqlAddInstallation, db), Args: []any{"0123456789abcdef0123456789abcdef", at, uint64(at.UnixMilli())}},
		{Name: "installation.ids", SQL: expand(sqlInstallationIDs, db), Query: true},
	}
}
