package historian

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

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
SELECT count(*) AS n, max(value) AS top FROM x;`, 10, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Columns, ",") != "n,top" || len(res.Rows) != 1 || res.Rows[0][1] != 49.0 {
		t.Fatalf("result %+v", res)
	}
	res, err = h.Query(ctx, "SELECT ts FROM points ORDER BY ts", 20, 5*time.Second)
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
		if _, err := h.Query(ctx, q, 10, 5*time.Second); !errors.Is(err, ErrNotAllowed) {
			t.Errorf("%q: %v, want refused", q, err)
		}
	}
	// A query that runs too long is stopped.
	_, err = h.Query(ctx, "SELECT count(*) FROM range(100000000000) a", 10, 100*time.Millisecond)
	if !errors.Is(err, ErrNotAllowed) || !strings.Contains(err.Error(), "stopped") {
		t.Fatalf("long query: %v", err)
	}
	// Nothing above changed the data.
	if n, _ := h.Count(ctx, p); n != 50 {
		t.Fatalf("%d points left", n)
	}
}
