package historian

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// extremes is the lowest and highest value of a chart and when they were.
type extremes struct {
	lo, hi     float64
	loAt, hiAt time.Time
}

func chartExtremes(t *testing.T, pts []Point) extremes {
	t.Helper()
	if len(pts) == 0 {
		t.Fatal("empty chart")
	}
	e := extremes{lo: pts[0].Value.F, hi: pts[0].Value.F, loAt: pts[0].TS, hiAt: pts[0].TS}
	for i, p := range pts {
		if i > 0 && p.TS.Before(pts[i-1].TS) {
			t.Fatalf("chart out of time order at %d: %s after %s", i, p.TS, pts[i-1].TS)
		}
		if p.Value.F < e.lo {
			e.lo, e.loAt = p.Value.F, p.TS
		}
		if p.Value.F > e.hi {
			e.hi, e.hiAt = p.Value.F, p.TS
		}
	}
	return e
}

// TestHourRollupsAnswerLongCharts: a chart of two-hour buckets reads the
// hour rollups once they are built, gives what the minutes give, keeps to
// the chart's range at partial hours, and shows a late value at once: its
// hour goes stale and is read from the minutes until it is built again.
func TestHourRollupsAnswerLongCharts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "h.duckdb")
	h := openTest(t, path)
	p := uns.Path("ent/site/area/line/kiln/temp")
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const hours = 12
	var batch []uns.Sample
	for s := 0; s < hours*3600; s += 10 {
		v := float64(500 + (s/10)%97) // 500..596
		batch = append(batch, uns.Sample{Path: p, TS: t0.Add(time.Duration(s) * time.Second), Value: uns.Float(v), Quality: uns.Good})
	}
	// Two extremes in the middle of hours: at 03:17:20 and at 08:41:00.
	batch[(3*3600+17*60+20)/10].Value = uns.Float(9000)
	batch[(8*3600+41*60)/10].Value = uns.Float(-40)
	if err := h.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Rollup(ctx); err != nil {
		t.Fatal(err)
	}
	from, to := t0.Add(30*time.Minute), t0.Add(hours*time.Hour-time.Second) // a partial first hour
	chart := func() extremes {
		pts, err := h.Downsample(ctx, p, from, to, 10) // 5 buckets of 2.3 h
		if err != nil {
			t.Fatal(err)
		}
		for _, pt := range pts {
			if pt.TS.Before(from) || pt.TS.After(to) {
				t.Fatalf("point at %s outside the chart's %s..%s", pt.TS, from, to)
			}
		}
		return chartExtremes(t, pts)
	}
	fromMinutes := chart()
	want := extremes{lo: -40, hi: 9000, loAt: t0.Add(8*time.Hour + 41*time.Minute), hiAt: t0.Add(3*time.Hour + 17*time.Minute + 20*time.Second)}
	if fromMinutes != want {
		t.Fatalf("from the minutes: %+v, want %+v", fromMinutes, want)
	}

	n, err := h.BuildHours(ctx, t0.Add(hours*time.Hour+hourAfter))
	if err != nil || n != hours {
		t.Fatalf("built %d hours, want %d (%v)", n, hours, err)
	}
	var rows int
	if err := h.db.QueryRowContext(ctx, `SELECT count(*) FROM rollup_1h`).Scan(&rows); err != nil || rows != hours {
		t.Fatalf("%d hour rows, want %d (%v)", rows, hours, err)
	}
	// The hours answer: an hour row changed behind the historian's back
	// shows in the chart; marked stale, the hour is read from the minutes
	// until it is built again.
	hour3 := t0.Add(3 * time.Hour)
	if _, err := h.db.ExecContext(ctx, `UPDATE rollup_1h SET vmax = 9500 WHERE bucket = ?`, hour3); err != nil {
		t.Fatal(err)
	}
	if got := chart(); got.hi != 9500 {
		t.Fatalf("the chart does not read the hour rollups: %+v", got)
	}
	if _, err := h.db.ExecContext(ctx, `INSERT INTO rollup_1h_stale VALUES (?)`, hour3); err != nil {
		t.Fatal(err)
	}
	if got := chart(); got != want {
		t.Fatalf("with the changed hour stale: %+v, want %+v", got, want)
	}
	if n, err := h.BuildHours(ctx, t0.Add(hours*time.Hour+hourAfter)); err != nil || n != 1 {
		t.Fatalf("built %d stale hours, want 1 (%v)", n, err)
	}
	if got := chart(); got != want {
		t.Fatalf("from the hours: %+v, want %+v", got, want)
	}

	// A late value, a new highest, in an hour that is built.
	late := t0.Add(5*time.Hour + 30*time.Minute + 5*time.Second)
	if err := h.WriteBatch(ctx, []uns.Sample{{Path: p, TS: late, Value: uns.Float(12000), Quality: uns.Good}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Rollup(ctx); err != nil {
		t.Fatal(err)
	}
	var stale int
	if err := h.db.QueryRowContext(ctx, `SELECT count(*) FROM rollup_1h_stale`).Scan(&stale); err != nil || stale != 1 {
		t.Fatalf("%d stale hours, want 1 (%v)", stale, err)
	}
	want.hi, want.hiAt = 12000, late
	if got := chart(); got != want {
		t.Fatalf("with a stale hour: %+v, want %+v", got, want)
	}
	if n, err := h.BuildHours(ctx, t0.Add(hours*time.Hour+hourAfter)); err != nil || n != 1 {
		t.Fatalf("built %d hours again, want 1 (%v)", n, err)
	}
	if err := h.db.QueryRowContext(ctx, `SELECT count(*) FROM rollup_1h_stale`).Scan(&stale); err != nil || stale != 0 {
		t.Fatalf("%d stale hours after the build, want 0 (%v)", stale, err)
	}
	if got := chart(); got != want {
		t.Fatalf("the stale hour built again: %+v, want %+v", got, want)
	}

	// The mark of the hours built survives a restart.
	h.Close()
	h = openTest(t, path)
	if got := h.hoursBuilt.Load(); got != t0.Add(hours*time.Hour).Unix() {
		t.Fatalf("hours built up to %s after a restart, want %s", time.Unix(got, 0).UTC(), t0.Add(hours*time.Hour))
	}
	if got := chart(); got != want {
		t.Fatalf("after a restart: %+v, want %+v", got, want)
	}
}

// TestHourRollupsTakeABacklog: values of a tag that come after their
// hours were built (an edge's backlog: new for the tag, not late) make
// those hours stale through the minute sums, and show in the chart.
func TestHourRollupsTakeABacklog(t *testing.T) {
	ctx := context.Background()
	h := openTest(t, filepath.Join(t.TempDir(), "h.duckdb"))
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	first, backlog := uns.Path("ent/site/area/line/a/v"), uns.Path("ent/site/area/line/b/v")
	write := func(p uns.Path, v float64) {
		var batch []uns.Sample
		for s := 0; s < 6*3600; s += 60 {
			batch = append(batch, uns.Sample{Path: p, TS: t0.Add(time.Duration(s) * time.Second), Value: uns.Float(v + float64(s%7)), Quality: uns.Good})
		}
		if err := h.WriteBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Rollup(ctx); err != nil {
			t.Fatal(err)
		}
	}
	write(first, 10)
	if n, err := h.BuildHours(ctx, t0.Add(6*time.Hour+hourAfter)); err != nil || n != 6 {
		t.Fatalf("built %d hours, want 6 (%v)", n, err)
	}
	write(backlog, 100)
	var stale int
	if err := h.db.QueryRowContext(ctx, `SELECT count(*) FROM rollup_1h_stale`).Scan(&stale); err != nil || stale != 6 {
		t.Fatalf("%d stale hours, want 6 (%v)", stale, err)
	}
	for _, built := range []bool{false, true} {
		if built {
			if n, err := h.BuildHours(ctx, t0.Add(6*time.Hour+hourAfter)); err != nil || n != 6 {
				t.Fatalf("built %d stale hours, want 6 (%v)", n, err)
			}
		}
		pts, err := h.Downsample(ctx, backlog, t0, t0.Add(6*time.Hour-time.Second), 6)
		if err != nil {
			t.Fatal(err)
		}
		if e := chartExtremes(t, pts); e.lo != 100 || e.hi != 106 {
			t.Fatalf("hours built again %v: the backlog's chart is %+v, want 100..106", built, e)
		}
	}
}
