package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/calx-iiot/calx/internal/pgtest"
	"github.com/calx-iiot/calx/uns"
)

// startSink starts a PostgreSQL and a sink on it, closed at the test's end.
func startSink(t testing.TB) (*pgtest.Server, *Sink) {
	t.Helper()
	pg := pgtest.Start(t)
	s, err := Open(Options{URL: pg.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return pg, s
}

func count(t *testing.T, s *Sink, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := s.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// TestSinkWrites: samples of every kind across two months go in; the same
// batch again, and a value sent twice in one batch, change nothing; the
// minute view adds them up; a database that goes down fails the writes,
// and they succeed once it is back.
func TestSinkWrites(t *testing.T) {
	pg, s := startSink(t)
	ctx := context.Background()
	base := time.Date(2026, 11, 30, 23, 59, 0, 0, time.UTC)
	var batch []uns.Sample
	for i := range 120 { // two minutes, over the month's end
		ts := base.Add(time.Duration(i) * time.Second)
		batch = append(batch,
			uns.Sample{Path: "ent/site/area/line/kiln/temp", TS: ts, Value: uns.Float(1000 + float64(i)), Quality: uns.Good},
			uns.Sample{Path: "ent/site/area/line/kiln/count", TS: ts, Value: uns.Int(int64(i)), Quality: uns.Good})
	}
	batch = append(batch, uns.Sample{Path: "ent/site/area/line/kiln/state", TS: base, Value: uns.Value{Kind: uns.KindString, S: "running"}, Quality: uns.Good},
		// The same tag and time twice: the last one wins.
		uns.Sample{Path: "ent/site/area/line/kiln/temp", TS: base, Value: uns.Float(999), Quality: uns.Bad})
	if err := s.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT count(*) FROM calx.points`); n != 241 {
		t.Fatalf("%d points, want 241", n)
	}
	if n := count(t, s, `SELECT count(*) FROM calx.tags`); n != 3 {
		t.Fatalf("%d tags", n)
	}
	// Two monthly partitions.
	if n := count(t, s, `SELECT count(*) FROM pg_inherits WHERE inhparent = 'calx.points'::regclass`); n != 2 {
		t.Fatalf("%d partitions", n)
	}
	var v float64
	var q int16
	if err := s.pool.QueryRow(ctx, `SELECT value, quality FROM calx.tag_values WHERE path = $1 AND ts = $2`, "ent/site/area/line/kiln/temp", base).Scan(&v, &q); err != nil || v != 999 || q != int16(uns.Bad) {
		t.Fatalf("the last value of a tag at a time: %v %v %v", v, q, err)
	}
	var str string
	if err := s.pool.QueryRow(ctx, `SELECT value_str FROM calx.tag_values WHERE path = 'ent/site/area/line/kiln/state'`).Scan(&str); err != nil || str != "running" {
		t.Fatalf("a string value: %q %v", str, err)
	}
	if n := count(t, s, `SELECT n FROM calx.rollup_1m WHERE path = 'ent/site/area/line/kiln/count' AND bucket = $1`, base.Add(time.Minute)); n != 60 {
		t.Fatalf("a minute's rollup: %d values", n)
	}

	// Text with a NUL and bytes that are not UTF-8, and two values of a
	// tag within one microsecond (one row in PostgreSQL, the last wins).
	odd := []uns.Sample{
		{Path: "ent/site/area/line/kiln/state", TS: base.Add(time.Hour + 100), Value: uns.Value{Kind: uns.KindString, S: "a\x00b\xff"}, Quality: uns.Good},
		{Path: "ent/site/area/line/kiln/state", TS: base.Add(time.Hour + 200), Value: uns.Value{Kind: uns.KindString, S: "c\x00"}, Quality: uns.Good},
	}
	if err := s.WriteBatch(ctx, odd); err != nil {
		t.Fatalf("odd values: %v", err)
	}
	if err := s.pool.QueryRow(ctx, `SELECT value_str FROM calx.tag_values WHERE path = 'ent/site/area/line/kiln/state' AND ts > $1`, base).Scan(&str); err != nil || str != "c\uFFFD" {
		t.Fatalf("odd text: %q %v", str, err)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM calx.points WHERE ts > $1`, base.Add(time.Minute*30)); err != nil {
		t.Fatal(err)
	}

	// A second sink on the same database (a restart) finds the tags.
	s2, err := Open(Options{URL: pg.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if err := s2.WriteBatch(ctx, batch[:10]); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT count(*) FROM calx.tags`); n != 3 {
		t.Fatalf("%d tags after a restart", n)
	}

	// The database goes down: writes fail; back, they succeed.
	pg.Stop()
	more := []uns.Sample{{Path: "ent/site/area/line/kiln/temp", TS: base.Add(time.Hour), Value: uns.Float(1), Quality: uns.Good}}
	if err := s.WriteBatch(ctx, more); err == nil {
		t.Fatal("a write to a database that is down succeeded")
	}
	pg.Start()
	if err := s.WriteBatch(ctx, more); err != nil {
		t.Fatalf("a write after the database came back: %v", err)
	}
	if n := count(t, s, `SELECT count(*) FROM calx.points`); n != 242 {
		t.Fatalf("%d points", n)
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{{URL: "postgres://x@h/db", Schema: "Bad-Name"}, {URL: "::nope"}} {
		if err := o.Validate(); err == nil {
			t.Errorf("%+v taken", o)
		}
	}
}
