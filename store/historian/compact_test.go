package historian

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// TestCompactKeepsEveryPoint: closed chunks rewritten in (tag, ts) order
// keep every point once, with its value and quality; a batch delivered
// again after the rewrite stores nothing twice; a late value for a
// compacted chunk is stored; and a one-tag read then skips the row groups
// of other tags.
func TestCompactKeepsEveryPoint(t *testing.T) {
	ctx := context.Background()
	h := openTest(t, filepath.Join(t.TempDir(), "h.duckdb"))
	const tags = 50
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var batches [][]uns.Sample
	var batch []uns.Sample
	for sec := 0; sec < 3*3600; sec += 5 { // three hours, a value every 5 s
		for k := range tags {
			batch = append(batch, uns.Sample{Path: uns.Path(fmt.Sprintf("lw/c/a/l/m/t%02d", k)), TS: t0.Add(time.Duration(sec) * time.Second),
				Value: uns.Float(float64(sec*100 + k)), Quality: uns.Good})
		}
		if len(batch) >= 5000 {
			batches = append(batches, batch)
			batch = nil
		}
	}
	batches = append(batches, batch)
	for _, b := range batches {
		if err := h.WriteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	before, err := h.Count(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	n, err := h.Compact(ctx, t0.Add(2*time.Hour))
	if err != nil || n != 12 {
		t.Fatalf("compacted %d chunks of 10 minutes, want 12: %v", n, err)
	}
	if n, err := h.Compact(ctx, t0.Add(2*time.Hour)); err != nil || n != 0 {
		t.Fatalf("compacted again %d: %v", n, err)
	}
	// Everything again, as a redelivery after a restart would.
	for _, b := range batches {
		if err := h.WriteBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	late := uns.Sample{Path: "lw/c/a/l/m/t07", TS: t0.Add(90*time.Minute + time.Second), Value: uns.Float(-1), Quality: uns.Good}
	if err := h.WriteBatch(ctx, []uns.Sample{late}); err != nil {
		t.Fatal(err)
	}
	after, err := h.Count(ctx, "")
	if err != nil || after != before+1 {
		t.Fatalf("%d points after compaction, redelivery and a late value; want %d: %v", after, before+1, err)
	}
	pts, err := h.History(ctx, "lw/c/a/l/m/t07", t0, t0.Add(3*time.Hour), 0)
	if err != nil || len(pts) != 3*3600/5+1 {
		t.Fatalf("history of a tag: %d points: %v", len(pts), err)
	}
	for i, p := range pts {
		if p.TS.Equal(late.TS) {
			if p.Value.F != -1 {
				t.Errorf("the late value: %+v", p)
			}
			continue
		}
		if want := float64(int(p.TS.Sub(t0).Seconds())*100 + 7); p.Value.F != want || p.Quality != uns.Good {
			t.Fatalf("point %d: %+v, want %v", i, p, want)
		}
	}
	// The compacted hours are ordered by tag: a row group of them holds
	// few tags, where one of the open hour holds them all.
	var spanCompacted, spanOpen int
	if err := h.db.QueryRowContext(ctx, `SELECT max(tag_id) - min(tag_id) FROM (SELECT tag_id FROM points WHERE ts < ? LIMIT 2048)`, t0.Add(2*time.Hour)).Scan(&spanCompacted); err != nil {
		t.Fatal(err)
	}
	if err := h.db.QueryRowContext(ctx, `SELECT max(tag_id) - min(tag_id) FROM (SELECT tag_id FROM points WHERE ts >= ? LIMIT 2048)`, t0.Add(2*time.Hour)).Scan(&spanOpen); err != nil {
		t.Fatal(err)
	}
	// 120 points a tag and chunk: 2,048 points span 18 tags once sorted.
	if spanCompacted+1 > 18 || spanOpen != tags-1 {
		t.Errorf("tags in the first 2,048 points: %d in compacted hours, %d in the open one", spanCompacted+1, spanOpen+1)
	}
}

// TestMaintenanceCompacts: the historian's own maintenance rewrites the
// chunks that closed by the clock of the values written.
func TestMaintenanceCompacts(t *testing.T) {
	ctx := context.Background()
	h, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "h.duckdb"), RollupEvery: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	t0 := time.Now().Add(-2 * time.Hour).Truncate(time.Hour)
	var batch []uns.Sample
	for sec := 0; sec < 40*60; sec += 10 { // 40 minutes of 5 tags
		for k := range 5 {
			batch = append(batch, uns.Sample{Path: uns.Path(fmt.Sprintf("lw/m/a/l/m/t%d", k)), TS: t0.Add(time.Duration(sec) * time.Second), Value: uns.Float(float64(sec)), Quality: uns.Good})
		}
	}
	if err := h.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	h.Start(ctx)
	// The newest value is at 39:50: chunks ending by 29:50 are closed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := h.db.QueryRowContext(ctx, `SELECT count(*) FROM points_compacted`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d chunks compacted by the maintenance, want 2 (0-10 and 10-20 minutes)", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
