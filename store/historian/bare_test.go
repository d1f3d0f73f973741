package historian

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/duckdb/duckdb-go/v2"
)

func TestBareAppendRate(t *testing.T) {
	dir := t.TempDir()
	rows, took, err := BareAppendRate(context.Background(), dir, 200*time.Millisecond, 1000)
	if err != nil || rows < 1000 || rows%1000 != 0 || took < 200*time.Millisecond {
		t.Fatalf("%d rows in %s: %v", rows, took, err)
	}
	connector, err := duckdb.NewConnector(filepath.Join(dir, "bare.duckdb"), nil)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	var n int64
	if err := db.QueryRow(`SELECT count(*) FROM points`).Scan(&n); err != nil || n != rows {
		t.Fatalf("%d rows in the file, %d reported: %v", n, rows, err)
	}
}
