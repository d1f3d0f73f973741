package historian

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// rollups reads rollup_1m: per tag id and minute, n, sum, min and max.
func rollups(t *testing.T, h *Historian) map[rollupMark][4]float64 {
	t.Helper()
	rows, err := h.DB().Query(`SELECT tag_id, epoch(bucket)::BIGINT // 60, n, sum, vmin, vmax FROM rollup_1m`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[rollupMark][4]float64{}
	for rows.Next() {
		var k rollupMark
		var n int64
		var sum, lo, hi float64
		if err := rows.Scan(&k.id, &k.m, &n, &sum, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		out[k] = [4]float64{float64(n), sum, lo, hi}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// The rollups written from the writer's minute sums equal those rescanned
// from the points, through values of every kind, late values, redeliveries
// of whole batches, a failed write, passes between writes and a reopen.
func TestMinuteSumsAgreeWithRescan(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "h.duckdb")
	h := openTest(t, path)
	rng := rand.New(rand.NewPCG(1, 2))
	const tags = 30
	t0 := time.Date(2026, 7, 1, 8, 0, 0, 0, time.UTC)
	next := make([]time.Time, tags) // per tag, the time of its next new value
	for i := range next {
		next[i] = t0.Add(time.Duration(rng.IntN(60000)) * time.Millisecond)
	}
	value := func() uns.Value {
		switch rng.IntN(12) {
		case 0:
			return uns.Int(rng.Int64N(100))
		case 1:
			return uns.Bool(rng.IntN(2) == 0)
		case 2:
			return uns.String("s")
		case 3:
			return uns.Float(math.NaN())
		case 4:
			return uns.Value{} // no value: a marker
		}
		return uns.Float(rng.NormFloat64() * 50)
	}
	var written []uns.Sample
	var clock time.Time
	for round := range 400 {
		var batch []uns.Sample
		for range 1 + rng.IntN(40) {
			i := rng.IntN(tags)
			s := uns.Sample{Path: uns.Path(fmt.Sprintf("ent/site/area/m%02d/v", i)), TS: next[i], Value: value(), Quality: uns.Good}
			batch = append(batch, s)
			next[i] = next[i].Add(time.Duration(100+rng.IntN(15000)) * time.Millisecond)
			if s.TS.After(clock) {
				clock = s.TS
			}
		}
		switch {
		case rng.IntN(10) == 0 && len(written) > 0: // redelivery of earlier values
			for range 1 + rng.IntN(10) {
				batch = append(batch, written[rng.IntN(len(written))])
			}
		case rng.IntN(10) == 0 && len(written) > 0: // backfill between stored values
			s := written[rng.IntN(len(written))]
			s.TS = s.TS.Add(-time.Duration(1+rng.IntN(900)) * time.Millisecond)
			s.Value = uns.Float(rng.Float64() * 1000)
			batch = append(batch, s)
		}
		if round == 150 || round == 151 { // failed writes, the first one redelivered, the second not
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			if err := h.WriteBatch(cancelled, batch); err == nil {
				t.Fatal("a write with a cancelled context succeeded")
			}
			if round == 151 {
				continue
			}
		}
		if err := h.WriteBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		written = append(written, batch...)
		if rng.IntN(5) == 0 {
			if _, err := h.RollupClosed(ctx, clock.Add(time.Duration(rng.IntN(30))*time.Second), rollupGrace, 1+rng.IntN(20)); err != nil {
				t.Fatal(err)
			}
		}
		if round == 250 { // sums kept at a stop are written at close
			h.Close()
			h = openTest(t, path)
		}
	}
	if _, err := h.Rollup(ctx); err != nil {
		t.Fatal(err)
	}
	var open, dirty int
	h.DB().QueryRow(`SELECT (SELECT count(*) FROM rollup_open), (SELECT count(*) FROM rollup_dirty)`).Scan(&open, &dirty)
	if open != 0 || dirty != 0 {
		t.Fatalf("%d open and %d dirty marks after a full rollup", open, dirty)
	}
	got := rollups(t, h)
	// ts_min and ts_max are times of points with the lowest and highest value.
	var wrong int
	h.DB().QueryRow(`SELECT count(*) FROM rollup_1m r WHERE NOT EXISTS (SELECT 1 FROM points p WHERE p.tag_id = r.tag_id AND p.ts = r.ts_min AND p.value = r.vmin)
	OR NOT EXISTS (SELECT 1 FROM points p WHERE p.tag_id = r.tag_id AND p.ts = r.ts_max AND p.value = r.vmax)`).Scan(&wrong)
	if wrong != 0 {
		t.Errorf("%d rollups whose ts_min or ts_max is not a point with that value", wrong)
	}
	// Everything again from the points.
	for _, q := range []string{`DELETE FROM rollup_1m`, `INSERT INTO rollup_dirty SELECT DISTINCT tag_id, time_bucket(INTERVAL 1 MINUTE, ts) FROM points`} {
		if _, err := h.DB().Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	h.marked = map[rollupMark]struct{}{}
	if _, err := h.Rollup(ctx); err != nil {
		t.Fatal(err)
	}
	want := rollups(t, h)
	if len(got) != len(want) || len(want) < 100 {
		t.Fatalf("%d minutes from the sums, %d from the points", len(got), len(want))
	}
	for k, w := range want {
		g := got[k]
		if g[0] != w[0] || math.Abs(g[1]-w[1]) > 1e-9*max(1, math.Abs(w[1])) || g[2] != w[2] || g[3] != w[3] {
			t.Errorf("tag %d minute %d: sums give n, sum, min, max %v, points %v", k.id, k.m, g, w)
		}
	}
}

// Marks of minutes whose sums a process kept when it stopped without
// closing are rescanned at the next open.
func TestOpenMarksAreRescannedAfterAStop(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "h.duckdb")
	h := openTest(t, path)
	t0 := time.Date(2026, 7, 1, 8, 0, 0, 0, time.UTC)
	p := uns.Path("ent/site/area/m/v")
	if err := h.WriteBatch(ctx, []uns.Sample{{Path: p, TS: t0, Value: uns.Float(3)}, {Path: p, TS: t0.Add(time.Second), Value: uns.Float(4)}}); err != nil {
		t.Fatal(err)
	}
	var open int
	h.DB().QueryRow(`SELECT count(*) FROM rollup_open`).Scan(&open)
	if open != 1 {
		t.Fatalf("%d open marks", open)
	}
	h.sums, h.done = nil, map[rollupMark]minuteSums{} // as if the process had stopped
	h.Close()
	h = openTest(t, path)
	if n, err := h.RollupClosed(ctx, t0.Add(time.Hour), rollupGrace, rollupChunk); err != nil || n != 1 {
		t.Fatalf("rescanned %d minutes: %v", n, err)
	}
	for _, r := range rollups(t, h) {
		if r != [4]float64{2, 7, 3, 4} {
			t.Fatalf("rollup %v", r)
		}
	}
}

// A late value drops its minute's sums: the minute is rescanned with it,
// and the sums (without it) are not written over the rescan afterwards.
func TestLateValueDropsMinuteSums(t *testing.T) {
	ctx := context.Background()
	h := openTest(t, filepath.Join(t.TempDir(), "h.duckdb"))
	m := time.Date(2026, 7, 1, 8, 0, 0, 0, time.UTC)
	p := uns.Path("ent/site/area/m/v")
	write := func(at time.Duration, v float64) {
		t.Helper()
		if err := h.WriteBatch(ctx, []uns.Sample{{Path: p, TS: m.Add(at), Value: uns.Float(v)}}); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 1)
	write(10*time.Second, 2)
	write(5*time.Second, 4) // late
	// The minute is rescanned (its end is past by the wall clock), while
	// no newer value has closed the sums.
	if n, err := h.RollupClosed(ctx, m.Add(2*time.Minute), rollupGrace, rollupChunk); err != nil || n != 1 {
		t.Fatalf("rolled up %d minutes: %v", n, err)
	}
	write(90*time.Second, 8) // closes the minute for the tag
	if _, err := h.RollupClosed(ctx, m.Add(2*time.Minute), rollupGrace, rollupChunk); err != nil {
		t.Fatal(err)
	}
	for k, r := range rollups(t, h) {
		if k.m == m.Unix()/60 && r != [4]float64{3, 7, 1, 4} {
			t.Fatalf("rollup of the minute with the late value: %v", r)
		}
	}
}
