package historian

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// irregular writes, for one tag, values at irregular times around t0:
//
//	t0-5s 100 (before the range), t0+0 10, t0+15s 20, t0+20s bad (no value),
//	t0+40s 40, t0+70s 70, t0+75s 5, t0+80s 80
func irregular(t *testing.T) (*Historian, uns.Path, time.Time) {
	t.Helper()
	ctx := context.Background()
	p := uns.Path("ent/site/area/line/m/temp")
	h := withTag(t, p)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	samples := []uns.Sample{
		{Path: p, TS: at(-5), Value: uns.Float(100)},
		{Path: p, TS: at(0), Value: uns.Float(10)},
		{Path: p, TS: at(15), Value: uns.Float(20)},
		{Path: p, TS: at(20), Value: uns.Null, Quality: uns.Bad},
		{Path: p, TS: at(40), Value: uns.Float(40)},
		{Path: p, TS: at(70), Value: uns.Float(70)},
		{Path: p, TS: at(75), Value: uns.Float(5)},
		{Path: p, TS: at(80), Value: uns.Float(80)},
	}
	if err := h.WriteBatch(ctx, samples); err != nil {
		t.Fatal(err)
	}
	return h, p, t0
}

func values(bs []Bucket) string {
	s := ""
	for _, b := range bs {
		if b.Value == nil {
			s += " -"
		} else {
			s += fmt.Sprintf(" %g", math.Round(*b.Value*1000)/1000)
		}
	}
	return s
}

// Each aggregate over 30 s buckets of [t0, t0+90s): bucket 0 holds 10, 20
// and the bad point, bucket 1 holds 40, bucket 2 holds 70, 5 and 80.
func TestAggregates(t *testing.T) {
	h, p, t0 := irregular(t)
	ctx := context.Background()
	for agg, want := range map[string]string{
		AggAvg:   " 15 40 51.667",
		AggMin:   " 10 40 5",
		AggMax:   " 20 40 80",
		AggFirst: " 10 40 70",
		AggLast:  " 20 40 80",
		AggCount: " 2 1 3",
		// twa, step: bucket 0: 10 for 15 s, 20 for 5 s, nothing for 10 s:
		// (150+100)/20 = 12.5. Bucket 1: nothing 30..40, 40 for 20 s: 40.
		// Bucket 2: 40 held for 10 s, 70 for 5 s, 5 for 5 s, 80 for 10 s (to
		// the end): (400+350+25+800)/30.
		AggTWA: " 12.5 40 52.5",
	} {
		bs, err := h.Aggregate(ctx, p, t0, t0.Add(90*time.Second), 30*time.Second, agg)
		if err != nil {
			t.Fatalf("%s: %v", agg, err)
		}
		if got := values(bs); got != want {
			t.Errorf("%s:%s, want%s", agg, got, want)
		}
		if len(bs) != 3 || !bs[1].TS.Equal(t0.Add(30*time.Second)) {
			t.Errorf("%s: buckets at %v", agg, bs)
		}
	}
	// The value before the range holds into it; an empty bucket stays empty.
	bs, err := h.Aggregate(ctx, p, t0.Add(-4*time.Second), t0.Add(-2*time.Second), time.Second, AggTWA)
	if err != nil || values(bs) != " 100 100" {
		t.Fatalf("twa carried in: %s %v", values(bs), err)
	}
	bs, _ = h.Aggregate(ctx, p, t0.Add(100*time.Second), t0.Add(110*time.Second), 10*time.Second, AggAvg)
	if values(bs) != " -" {
		t.Fatalf("empty bucket: %s", values(bs))
	}
	if _, err := h.Aggregate(ctx, p, t0, t0.Add(time.Minute), time.Second, "median"); err == nil {
		t.Fatal("unknown aggregate accepted")
	}
	if _, err := h.Aggregate(ctx, "ent/none/area/line/m/x", t0, t0.Add(time.Minute), time.Second, AggAvg); err == nil {
		t.Fatal("unknown tag accepted")
	}
}

// Downsampling keeps the extremes of every bucket.
func TestDownsampleKeepsPeaks(t *testing.T) {
	ctx := context.Background()
	p := uns.Path("ent/site/area/line/m/flow")
	h := withTag(t, p)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var batch []uns.Sample
	for i := range 10000 {
		v := math.Sin(float64(i) / 100)
		switch i {
		case 1234:
			v = 50 // a spike
		case 7777:
			v = -50 // a dip
		}
		batch = append(batch, uns.Sample{Path: p, TS: t0.Add(time.Duration(i) * time.Second), Value: uns.Float(v)})
	}
	if err := h.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	pts, err := h.Downsample(ctx, p, t0, t0.Add(10000*time.Second), 200)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) > 200 || len(pts) < 150 {
		t.Fatalf("%d points for 200 pixels", len(pts))
	}
	var spike, dip bool
	for i, pt := range pts {
		spike = spike || pt.Value.F == 50 && pt.TS.Equal(t0.Add(1234*time.Second))
		dip = dip || pt.Value.F == -50 && pt.TS.Equal(t0.Add(7777*time.Second))
		if i > 0 && !pts[i-1].TS.Before(pt.TS) {
			t.Fatalf("points out of order at %d", i)
		}
	}
	if !spike || !dip {
		t.Fatalf("downsampling lost the spike (%v) or the dip (%v)", spike, dip)
	}
}

// Charts of long ranges read the minute rollups: extremes survive, and a
// value back-filled into an old minute shows once the rollups ran.
func TestRollupsForLongCharts(t *testing.T) {
	ctx := context.Background()
	p := uns.Path("ent/site/area/line/m/level")
	h := withTag(t, p)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var batch []uns.Sample
	for i := range 3 * 8640 { // three days every 10 s
		v := math.Sin(float64(i) / 500)
		if i == 5000 {
			v = 70
		}
		batch = append(batch, uns.Sample{Path: p, TS: t0.Add(time.Duration(i) * 10 * time.Second), Value: uns.Float(v)})
	}
	if err := h.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	chart := func() []Point {
		t.Helper()
		pts, err := h.Downsample(ctx, p, t0, t0.Add(72*time.Hour), 100)
		if err != nil {
			t.Fatal(err)
		}
		return pts
	}
	if pts := chart(); len(pts) != 0 {
		t.Fatalf("%d points before the rollups ran", len(pts))
	}
	if n, err := h.Rollup(ctx); err != nil || n != 3*24*60 {
		t.Fatalf("rollup of %d minutes: %v", n, err)
	}
	has := func(pts []Point, v float64, at time.Time) bool {
		for _, pt := range pts {
			if pt.Value.F == v && pt.TS.Equal(at) {
				return true
			}
		}
		return false
	}
	pts := chart()
	if len(pts) > 100 || len(pts) < 80 || !has(pts, 70, t0.Add(50000*time.Second)) {
		t.Fatalf("%d points, spike kept: %v", len(pts), has(pts, 70, t0.Add(50000*time.Second)))
	}
	// Backfill into the first day.
	late := t0.Add(3*time.Hour + 5*time.Second)
	if err := h.WriteBatch(ctx, []uns.Sample{{Path: p, TS: late, Value: uns.Float(-80)}}); err != nil {
		t.Fatal(err)
	}
	if n, err := h.Rollup(ctx); err != nil || n != 1 {
		t.Fatalf("rollup of %d minutes after backfill: %v", n, err)
	}
	if !has(chart(), -80, late) {
		t.Fatal("back-filled dip not in the chart")
	}
	if n, _ := h.Rollup(ctx); n != 0 {
		t.Fatalf("%d minutes still marked", n)
	}
}

// withTag opens a historian in a temp dir that knows the float tag p.
func withTag(t *testing.T, p uns.Path) *Historian {
	t.Helper()
	h := openTest(t, filepath.Join(t.TempDir(), "h.duckdb"))
	if err := h.UpsertTags(context.Background(), []uns.Tag{{Path: p, DataType: uns.TypeFloat64}}); err != nil {
		t.Fatal(err)
	}
	return h
}

// Aggregates of whole minutes come from the rollups and agree with the
// points; minutes not rolled up yet come from the points.
func TestAggregatesFromRollups(t *testing.T) {
	ctx := context.Background()
	p := uns.Path("ent/site/area/line/m/power")
	h := withTag(t, p)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var batch []uns.Sample
	for i := range 4 * 3600 { // four hours at 1 Hz
		batch = append(batch, uns.Sample{Path: p, TS: t0.Add(time.Duration(i) * time.Second), Value: uns.Float(float64(i % 977))})
	}
	if err := h.WriteBatch(ctx, batch[:3*3600]); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Rollup(ctx); err != nil {
		t.Fatal(err)
	}
	// The last hour is written but not rolled up.
	if err := h.WriteBatch(ctx, batch[3*3600:]); err != nil {
		t.Fatal(err)
	}
	to := t0.Add(4 * time.Hour)
	for _, agg := range []string{AggAvg, AggMin, AggMax, AggCount} {
		fast, err := h.Aggregate(ctx, p, t0, to, 15*time.Minute, agg)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := h.aggregate(ctx, p, t0, to, 15*time.Minute, agg, false)
		if err != nil {
			t.Fatal(err)
		}
		if values(fast) != values(slow) {
			t.Errorf("%s: rollups%s\npoints%s", agg, values(fast), values(slow))
		}
	}
	// With the first hour's points gone (retention), its buckets still
	// come from the rollups.
	if _, err := h.db.ExecContext(ctx, `DELETE FROM points WHERE ts < ?`, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	bs, err := h.Aggregate(ctx, p, t0, to, 15*time.Minute, AggMax)
	if err != nil || bs[0].Value == nil || *bs[0].Value != 899 {
		t.Fatalf("first bucket after its points went: %s %v", values(bs), err)
	}
}

// Passes roll up closed minutes only, a chunk at a time, oldest first; the
// minute still filling stays marked and is read from the points. A minute
// is closed for a tag once the tag has a value in a later minute, once the
// newest value of any tag is past its end and the grace, or after a quiet
// time by the wall clock.
func TestRollupClosedMinutes(t *testing.T) {
	ctx := context.Background()
	h := withTag(t, "g/e/d/a")
	now := time.Date(2026, 5, 1, 10, 30, 20, 0, time.UTC)
	var batch []uns.Sample
	for _, p := range []uns.Path{"g/e/d/a", "g/e/d/b"} {
		for _, ts := range []time.Time{now.Add(-3 * time.Minute), now.Add(-2 * time.Minute), now.Add(-time.Second)} {
			batch = append(batch, uns.Sample{Path: p, TS: ts, Value: uns.Float(1), Quality: uns.Good})
		}
	}
	if err := h.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	marks := func() (n int) {
		h.DB().QueryRowContext(ctx, `SELECT (SELECT count(*) FROM rollup_dirty) + (SELECT count(*) FROM rollup_open)`).Scan(&n)
		return n
	}
	if marks() != 6 {
		t.Fatalf("%d marks", marks())
	}
	// 4 closed minutes (2 tags x 2 minutes), 3 at a time: two passes inside.
	if n, err := h.RollupClosed(ctx, now, 5*time.Second, 3); err != nil || n != 4 {
		t.Fatalf("rolled up %d: %v", n, err)
	}
	if marks() != 2 {
		t.Fatalf("%d marks left, want the 2 of the open minute", marks())
	}
	rolled := func() (n int) {
		h.DB().QueryRowContext(ctx, `SELECT count(*) FROM rollup_1m`).Scan(&n)
		return n
	}
	if rolled() != 4 {
		t.Fatalf("%d minutes in the rollups", rolled())
	}
	// Past the grace by the wall clock, but nothing newer came: still open.
	if n, _ := h.RollupClosed(ctx, now.Truncate(time.Minute).Add(time.Minute+6*time.Second), 5*time.Second, 3); n != 0 {
		t.Fatalf("rolled up %d minutes with nothing newer", n)
	}
	// A value of b in the next minute, past its end and the grace, closes
	// b's minute and a's.
	next := now.Truncate(time.Minute).Add(time.Minute + 10*time.Second)
	if err := h.WriteBatch(ctx, []uns.Sample{{Path: "g/e/d/b", TS: next, Value: uns.Float(2)}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := h.RollupClosed(ctx, next, 5*time.Second, 3); n != 2 {
		t.Fatalf("rolled up %d minutes after a newer value", n)
	}
	// b's last minute closes after the quiet time.
	if n, _ := h.RollupClosed(ctx, next.Add(sumsQuiet+time.Minute), 5*time.Second, 3); n != 1 || marks() != 0 || rolled() != 7 {
		t.Fatalf("rolled up %d minutes after the quiet time; %d marks, %d rollups", n, marks(), rolled())
	}
	// A late value in a rolled-up minute: rescanned.
	if err := h.WriteBatch(ctx, []uns.Sample{{Path: "g/e/d/a", TS: now.Add(-3*time.Minute + 30*time.Second), Value: uns.Float(7)}}); err != nil {
		t.Fatal(err)
	}
	if n, _ := h.RollupClosed(ctx, next.Add(sumsQuiet+time.Minute), 5*time.Second, 3); n != 1 {
		t.Fatalf("rescanned %d minutes after a late value", n)
	}
	var cnt int
	var hi float64
	h.DB().QueryRowContext(ctx, `SELECT r.n, r.vmax FROM rollup_1m r JOIN tags t ON t.id = r.tag_id WHERE t.path = 'g/e/d/a' AND r.bucket = ?`,
		now.Add(-3*time.Minute).Truncate(time.Minute)).Scan(&cnt, &hi)
	if cnt != 2 || hi != 7 {
		t.Fatalf("rescanned minute: n %d, max %v", cnt, hi)
	}
}
