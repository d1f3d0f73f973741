package historian

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// Retention per prefix: old points of one subtree go to Parquet and stay
// queryable, another subtree's are only deleted, the longest prefix wins,
// rollups outlive the raw points, and a second pass changes nothing.
func TestRetentionAndArchive(t *testing.T) {
	ctx := context.Background()
	h := openTest(t, filepath.Join(t.TempDir(), "h.duckdb"))
	a, b, c := uns.Path("ent/a/area/line/m/v"), uns.Path("ent/b/area/line/m/v"), uns.Path("other/site/area/line/m/v")
	if err := h.UpsertTags(ctx, []uns.Tag{{Path: a}, {Path: b}, {Path: c}}); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	var batch []uns.Sample
	for d := range 100 { // one value a day at noon, 100 days back
		ts := now.Add(-time.Duration(d)*24*time.Hour - 12*time.Hour)
		for _, p := range []uns.Path{a, b, c} {
			batch = append(batch, uns.Sample{Path: p, TS: ts, Value: uns.Float(float64(d))})
		}
	}
	if err := h.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Rollup(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := h.BuildHours(ctx, now); err != nil {
		t.Fatal(err)
	}
	hourRows := func(p uns.Path) (n int) {
		if err := h.db.QueryRowContext(ctx, `SELECT count(*) FROM rollup_1h WHERE tag_id = (SELECT id FROM tags WHERE path = ?)`, string(p)).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if hourRows(b) != 100 {
		t.Fatalf("%d hour rollups of b, want 100", hourRows(b))
	}
	rules := []RetentionRule{
		{Prefix: "ent", Raw: 60 * 24 * time.Hour, Rollups: 80 * 24 * time.Hour},
		{Prefix: "ent/a", Raw: 30 * 24 * time.Hour, Export: true},
	}
	res, err := h.ApplyRetention(ctx, rules, now)
	if err != nil {
		t.Fatal(err)
	}
	// a: days 30..99 exported and deleted (70); b: days 60..99 deleted (40);
	// b's rollups older than 80 days deleted (20); other/ untouched.
	if res.Exported != 70 || res.Deleted != 110 || res.RollupsDeleted != 20 {
		t.Fatalf("retention %+v", res)
	}
	if hourRows(b) != 80 || hourRows(c) != 100 {
		t.Fatalf("hour rollups left: b %d, want 80; other %d, want 100", hourRows(b), hourRows(c))
	}
	count := func(p uns.Path) int64 {
		n, _ := h.Count(ctx, p)
		return n
	}
	if count(a) != 30 || count(b) != 60 || count(c) != 100 {
		t.Fatalf("left: a %d, b %d, other %d", count(a), count(b), count(c))
	}
	q, err := h.Query(ctx, `SELECT count(*), min(value), max(value) FROM points_archive WHERE path = 'ent/a/area/line/m/v'`, QueryOptions{MaxRows: 10, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r := q.Rows[0]; r[0] != int64(70) || r[1] != 30.0 || r[2] != 99.0 {
		t.Fatalf("archive holds %v", r)
	}
	// The rollups of a outlive its raw points: a chart of 100 days still
	// has its old values.
	pts, err := h.Downsample(ctx, a, now.Add(-100*24*time.Hour), now, 50)
	if err != nil || len(pts) < 40 {
		t.Fatalf("chart of a: %d points, %v", len(pts), err)
	}
	res, err = h.ApplyRetention(ctx, rules, now)
	if err != nil || res != (RetentionResult{}) {
		t.Fatalf("second pass: %+v %v", res, err)
	}
	// Reopened, the archive view is there again.
	h.Close()
	h2 := openTest(t, h.path)
	if q, err := h2.Query(ctx, `SELECT count(*) FROM points_archive`, QueryOptions{MaxRows: 10, Timeout: 10 * time.Second}); err != nil || q.Rows[0][0] != int64(70) {
		t.Fatalf("archive after reopening: %v %v", q, err)
	}
}
