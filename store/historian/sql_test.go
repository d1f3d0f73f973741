package historian

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/calx-iiot/calx/uns"
)

func TestReadOnlyQuery(t *testing.T) {
	ctx := context.Background()
	p := uns.Path("ent/site/area/line/m/temp")
	h := withTag(t, p)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var batch []uns.Sample
	for i := range 50 {
		batch = append(batch, uns.Sample{Path: p, TS: t0.Add(time.Duration(i) * time.Second), Value: uns.Float(float64(i))})
	}
	if err := h.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	res, err := h.Query(ctx, `WITH x AS (SELECT value FROM points JOIN tags ON tags.id = points.tag_id WHERE path = 'ent/site/area/line/m/temp')
SELECT count(*) AS n, max(value) AS top FROM x;`, QueryOptions{MaxRows: 10, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Columns, ",") != "n,top" || len(res.Rows) != 1 || res.Rows[0][1] != 49.0 {
		t.Fatalf("result %+v", res)
	}
	res, err = h.Query(ctx, "SELECT ts FROM points ORDER BY ts", QueryOptions{MaxRows: 20, Timeout: 5 * time.Second})
	if err != nil || len(res.Rows) != 20 || !res.Truncated {
		t.Fatalf("row limit: %v %+v", err, res)
	}
	for _, q := range []string{
		"DELETE FROM points",
		"DROP TABLE points",
		"COPY points TO 'out.csv'",
		"SELECT 1; SELECT 2",
		"SELECT * FROM read_csv('/etc/passwd')",
		"SELECT * FROM '/etc/passwd'",
		"SELECT * FROM duckdb_settings()",
		"SELECT getenv('HOME')",
		"ATTACH 'x.db'",
		"",
	} {
		if _, err := h.Query(ctx, q, QueryOptions{MaxRows: 10, Timeout: 5 * time.Second}); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%q: %v, want refused", q, err)
		}
	}
	// A query that runs too long is stopped.
	_, err = h.Query(ctx, "SELECT count(*) FROM range(100000000000) a", QueryOptions{MaxRows: 10, Timeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("long query: %v", err)
	}
	// Nothing above changed the data.
	if n, _ := h.Count(ctx, p); n != 50 {
		t.Fatalf("%d points left", n)
	}
}

// secretFiles writes the same secret as CSV, JSON and Parquet into a
// folder of its own, outside the historian's, with an engine that is not
// sealed, and returns the folder and the files.
func secretFiles(t *testing.T, secret string) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	files := []string{filepath.Join(dir, "secret.csv"), filepath.Join(dir, "secret.json"), filepath.Join(dir, "secret.parquet")}
	if err := os.WriteFile(files[0], []byte("k,v\nkey,"+secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files[1], []byte(`[{"k":"key","v":"`+secret+`"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := duckdb.NewConnector("", nil)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(c)
	defer db.Close()
	if _, err := db.Exec(`COPY (SELECT 'key' AS k, '` + secret + `' AS v) TO '` + files[2] + `' (FORMAT parquet)`); err != nil {
		t.Fatal(err)
	}
	return dir, files
}

// The SQL endpoint cannot read a file: not through the historian's check
// (a common table expression named like the file, in a subquery, once
// let the file's name through as a table), and not past it either, since
// the engine itself has file access off and its configuration locked.
func TestQueryReadsNoFile(t *testing.T) {
	ctx := context.Background()
	const secret = "s3cr3t-4711"
	h := withTag(t, "ent/site/area/line/m/temp")
	dir, files := secretFiles(t, secret)
	opts := QueryOptions{MaxRows: 10, Timeout: 5 * time.Second, Audit: true}
	var attacks []string
	for _, f := range append(files, filepath.Join(dir, "*.csv"), filepath.Join(dir, "secret.*")) {
		attacks = append(attacks,
			`SELECT b.* FROM (WITH "`+f+`" AS (SELECT 1) SELECT 1) a, '`+f+`' b`,
			`SELECT * FROM '`+f+`'`,
			`WITH x AS (SELECT 1) SELECT * FROM (WITH "`+f+`" AS (SELECT 2) SELECT 2) a, "`+f+`" b`,
		)
	}
	attacks = append(attacks,
		`SELECT * FROM read_text('`+files[0]+`')`,
		`SELECT * FROM glob('`+dir+`/*')`,
		`SET enable_external_access = true`,
		`SELECT * FROM (WITH duckdb_settings AS (SELECT 1) SELECT 1) a, duckdb_settings() b`,
	)
	for _, q := range attacks {
		res, err := h.Query(ctx, q, opts)
		if !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s: %v %+v, want refused", q, err, res)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: the error tells the secret: %v", q, err)
		}
	}

	// The engine's own guard, with no check in front of it: every file
	// read is refused, and nothing turns file access back on.
	for _, f := range files {
		var v string
		err := h.db.QueryRowContext(ctx, `SELECT v FROM '`+f+`'`).Scan(&v)
		if err == nil || !strings.Contains(err.Error(), "disabled by configuration") {
			t.Errorf("engine read %s: %q %v, want a permission error", f, v, err)
		}
	}
	for _, q := range []string{"SET enable_external_access = true", "SET lock_configuration = false", "RESET lock_configuration", "SET allowed_directories = ['/']"} {
		if _, err := h.db.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "locked") {
			t.Errorf("engine %q: %v, want the configuration locked", q, err)
		}
	}
	var access string
	if err := h.db.QueryRowContext(ctx, `SELECT current_setting('enable_external_access')::VARCHAR`).Scan(&access); err != nil || access != "false" {
		t.Errorf("enable_external_access = %q %v", access, err)
	}
}

// The audit log is for administrators only, however the query names it.
func TestQueryAuditForAdminsOnly(t *testing.T) {
	ctx := context.Background()
	h := withTag(t, "ent/site/area/line/m/temp")
	if err := h.Audit(ctx, AuditEntry{User: "admin", Action: "write", Path: "x", Value: "1", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	engineer := QueryOptions{MaxRows: 10, Timeout: 5 * time.Second}
	for _, q := range []string{
		`SELECT * FROM audit`,
		`SELECT * FROM main.audit`,
		`SELECT b.* FROM (WITH audit AS (SELECT 1) SELECT 1) a, audit b`,
		`SELECT * FROM (SELECT * FROM (WITH audit AS (SELECT 1) SELECT 1)), audit`,
		`SELECT * FROM information_schema.tables`,
		`SELECT * FROM system.main.points`,
		// A CTE sees only those before it: audit here is the table.
		`WITH x AS (SELECT * FROM audit), audit AS (SELECT 1) SELECT * FROM x`,
		`WITH audit AS (SELECT * FROM audit) SELECT * FROM audit`,
		`SUMMARIZE audit`,
		`DESCRIBE audit`,
		`SELECT * FROM (SUMMARIZE audit)`,
	} {
		if res, err := h.Query(ctx, q, engineer); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%s: %v %+v, want refused", q, err, res)
		}
	}
	// A common table expression still stands for its own name where it
	// is defined, audit included.
	res, err := h.Query(ctx, `WITH audit AS (SELECT 42 AS n) SELECT n FROM audit`, engineer)
	if err != nil || res.Rows[0][0] != int32(42) {
		t.Fatalf("own CTE: %v %+v", err, res)
	}
	admin := engineer
	admin.Audit = true
	res, err = h.Query(ctx, `SELECT username, action FROM audit`, admin)
	if err != nil || len(res.Rows) != 1 || res.Rows[0][0] != "admin" {
		t.Fatalf("admin: %v %+v", err, res)
	}
}

// A failed query's error is DuckDB's message about the user's query, not
// an excerpt of the statement the historian wrapped it in.
func TestQueryErrorShowsNoWrapper(t *testing.T) {
	h := withTag(t, "ent/site/area/line/m/temp")
	_, err := h.Query(context.Background(), "SELECT nope FROM points", QueryOptions{MaxRows: 10, Timeout: 5 * time.Second})
	if !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("%v", err)
	}
	if strings.Contains(err.Error(), "LIMIT") || strings.Contains(err.Error(), "LINE") {
		t.Fatalf("the error shows the wrapped statement: %v", err)
	}
}

// The history file is the process's alone, whatever the mode of its
// folder or of the file an earlier version left; an export larger than
// its limit is refused before it is written.
func TestHistoryFilePrivateAndExportCapped(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "h.duckdb")
	h := openTest(t, path)
	p := uns.Path("ent/site/area/line/m/temp")
	if err := h.UpsertTags(context.Background(), []uns.Tag{{Path: p, DataType: uns.TypeFloat64}}); err != nil {
		t.Fatal(err)
	}
	h.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	h = openTest(t, path)
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("history file mode %v %v, want 0600", st.Mode().Perm(), err)
	}
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var batch []uns.Sample
	for i := range 100 {
		batch = append(batch, uns.Sample{Path: p, TS: t0.Add(time.Duration(i) * time.Second), Value: uns.Float(float64(i))})
	}
	if err := h.WriteBatch(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.ExportParquet(context.Background(), []uns.Path{p}, t0, t0.Add(time.Hour), 99); !errors.Is(err, ErrTooManyPoints) {
		t.Fatalf("export of 100 points capped at 99: %v", err)
	}
	f, n, err := h.ExportParquet(context.Background(), []uns.Path{p}, t0, t0.Add(time.Hour), 100)
	if err != nil || n != 100 {
		t.Fatalf("export: %d %v", n, err)
	}
	f.Close()
	if left, _ := os.ReadDir(h.exportDir()); len(left) != 0 {
		t.Fatalf("the exports folder keeps %d files", len(left))
	}
}
