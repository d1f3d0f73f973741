package historian

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"path/filepath"
	"time"

	"github.com/calx-iiot/calx/uns"
	"github.com/duckdb/duckdb-go/v2"
)

// BareAppendRate measures this machine's limit for the historian: rows of
// the points table's shape appended with the DuckDB appender into a table
// without a key, in commits of batch rows, for about d, into a new file in
// dir. It returns the rows appended and the time they took.
func BareAppendRate(ctx context.Context, dir string, d time.Duration, batch int) (int64, time.Duration, error) {
	connector, err := duckdb.NewConnector(filepath.Join(dir, "bare.duckdb")+"?autoinstall_known_extensions=false&autoload_known_extensions=false", nil)
	if err != nil {
		return 0, 0, fmt.Errorf("bare appender: %w", err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE points (tag_id INTEGER NOT NULL, ts TIMESTAMPTZ NOT NULL,
	value DOUBLE, value_int BIGINT, value_str VARCHAR, quality UTINYINT NOT NULL)`); err != nil {
		return 0, 0, fmt.Errorf("bare appender: %w", err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("bare appender: %w", err)
	}
	defer conn.Close()
	var rows int64
	base := time.Now().Add(-24 * time.Hour)
	start := time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		err := conn.Raw(func(dc any) error {
			app, err := duckdb.NewAppenderWithColumns(dc.(driver.Conn), "", "", "points", bareColumns)
			if err != nil {
				return err
			}
			for i := range batch {
				n := rows + int64(i)
				if err := app.AppendRow(int32(n%100), base.Add(time.Duration(n)*time.Microsecond), float64(n), uint8(192)); err != nil {
					app.Close()
					return err
				}
			}
			return app.Close()
		})
		if err != nil {
			return rows, time.Since(start), fmt.Errorf("bare appender: %w", err)
		}
		rows += int64(batch)
	}
	return rows, time.Since(start), ctx.Err()
}

// bareTable is a table of the points' shape without a key, in a file of
// its own, that takes batches as the bare appender does: the baseline a
// benchmark measures turn about with the historian, so that both see the
// disk in the same state.
type bareTable struct {
	db   *sql.DB
	conn *sql.Conn
}

func openBare(ctx context.Context, dir string) (*bareTable, error) {
	connector, err := duckdb.NewConnector(filepath.Join(dir, "bare.duckdb")+"?autoinstall_known_extensions=false&autoload_known_extensions=false", nil)
	if err != nil {
		return nil, fmt.Errorf("bare appender: %w", err)
	}
	db := sql.OpenDB(connector)
	// The historian's settings: its checkpoints and its default memory.
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`SET checkpoint_threshold = '256MB'; SET memory_limit = '%dB'; CREATE TABLE points (tag_id INTEGER NOT NULL, ts TIMESTAMPTZ NOT NULL,
	value DOUBLE, value_int BIGINT, value_str VARCHAR, quality UTINYINT NOT NULL)`, DefaultMemoryLimit)); err != nil {
		db.Close()
		return nil, fmt.Errorf("bare appender: %w", err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bare appender: %w", err)
	}
	return &bareTable{db: db, conn: conn}, nil
}

// bareColumns are those the bare appender fills with floats; the others
// take their default, NULL, without a call into DuckDB for each (the
// fastest way the appender has, which the historian takes too).
var bareColumns = []string{"tag_id", "ts", "value", "quality"}

// append commits samples (floats) as rows of tag ids (by their index in ids).
func (b *bareTable) append(samples []uns.Sample, ids []int32) error {
	return b.conn.Raw(func(dc any) error {
		app, err := duckdb.NewAppenderWithColumns(dc.(driver.Conn), "", "", "points", bareColumns)
		if err != nil {
			return err
		}
		for i := range samples {
			s := &samples[i]
			if err := app.AppendRow(ids[i], s.TS, s.Value.F, uint8(s.Quality)); err != nil {
				app.Close()
				return err
			}
		}
		return app.Close()
	})
}

func (b *bareTable) close() {
	b.conn.Close()
	b.db.Close()
}
