package historian

import (
	"context"
	"database/sql/driver"
	"fmt"
	"time"

	duckdb "github.com/duckdb/duckdb-go/v2"

	"github.com/calx-iiot/calx/uns"
)

// How a write stays idempotent on (tag, ts) without an index.
//
// The points table has no key: an index on (tag, ts) cost three quarters
// of the write rate and grew with the table in memory. Instead the writer
// keeps, per tag, the newest timestamp stored. A sample newer than that
// cannot be stored yet and goes to the points table through a plain
// appender, as fast as DuckDB appends. That is nearly every sample: an
// edge sends each tag's values in time order, its store-and-forward
// backlog included. A sample not newer (redelivery after a crash, a
// second copy within a batch, values an edge sends again) is late: late
// samples go to a temporary table and are merged with a join against the
// points of their time range, which the table's zone maps keep small, so
// that the first copy of a (tag, ts) stays, except that a value replaces
// a marker (no value) of the same instant: a stale marker written at a
// death must not hide a value read in that instant and delivered later.
// Both parts and the rollup marks commit in one transaction.

const lateTable = `CREATE TEMP TABLE IF NOT EXISTS late_points (
	seq INTEGER NOT NULL, tag_id INTEGER NOT NULL, ts TIMESTAMPTZ NOT NULL,
	value DOUBLE, value_int BIGINT, value_str VARCHAR, quality UTINYINT NOT NULL)`

// isMarker is true for a row of points (or late_points) that has no value.
const isMarker = `(%[1]s.value IS NULL AND %[1]s.value_int IS NULL AND %[1]s.value_str IS NULL)`

var (
	// mergeLate: the first of the late samples of each (tag, ts), a value
	// before a marker, ...
	lateFirst = `CREATE OR REPLACE TEMP TABLE late_first AS
SELECT DISTINCT ON (tag_id, ts) tag_id, ts, value, value_int, value_str, quality FROM late_points l
ORDER BY tag_id, ts, ` + fmt.Sprintf(isMarker, "l") + `, seq`
	// ... replaces a stored marker when it has a value ...
	lateReplace = `DELETE FROM points p USING late_first l
WHERE p.ts >= $1 AND p.ts <= $2 AND p.tag_id = l.tag_id AND p.ts = l.ts
	AND ` + fmt.Sprintf(isMarker, "p") + ` AND NOT ` + fmt.Sprintf(isMarker, "l")
	// ... and is stored when nothing of its (tag, ts) is.
	lateInsert = `INSERT INTO points SELECT l.* FROM late_first l
WHERE NOT EXISTS (SELECT 1 FROM points p WHERE p.ts >= $1 AND p.ts <= $2 AND p.tag_id = l.tag_id AND p.ts = l.ts)`
)

// loadNewest reads the newest timestamp of every tag. The caller holds wmu
// or has the historian to itself.
func (h *Historian) loadNewest(ctx context.Context) error {
	rows, err := h.conn.QueryContext(ctx, `SELECT tag_id, max(ts) FROM points GROUP BY tag_id`)
	if err != nil {
		return fmt.Errorf("historian %s: newest values: %w", h.path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int32
		var ts time.Time
		if err := rows.Scan(&id, &ts); err != nil {
			return fmt.Errorf("historian %s: newest values: %w", h.path, err)
		}
		h.newest.set(id, ts)
	}
	return rows.Err()
}

// newestByTag keeps the newest timestamp of each tag by its id: tag ids
// are small and dense (a sequence from 1), so a slice is their map, and a
// lookup costs no hashing (it is made for every value written).
type newestByTag []time.Time

// get returns the newest timestamp of a tag, if it has one.
func (n newestByTag) get(id int32) (time.Time, bool) {
	if id < 0 || int(id) >= len(n) || n[id].IsZero() {
		return time.Time{}, false
	}
	return n[id], true
}

// set records a tag's newest timestamp.
func (n *newestByTag) set(id int32, ts time.Time) {
	if id < 0 {
		return
	}
	if int(id) >= len(*n) {
		*n = append(*n, make([]time.Time, int(id)+1-len(*n)+len(*n)/4)...)
	}
	(*n)[id] = ts
}

// migrate rebuilds a points table made with a (tag, ts) primary key, as
// earlier versions made it, without the key; then it reads the newest
// timestamp of every tag.
func (h *Historian) migrate(ctx context.Context) error {
	var keyed int
	if err := h.conn.QueryRowContext(ctx, `SELECT count(*) FROM duckdb_constraints()
WHERE table_name = 'points' AND constraint_type = 'PRIMARY KEY'`).Scan(&keyed); err != nil {
		return fmt.Errorf("historian %s: schema version: %w", h.path, err)
	}
	if keyed > 0 {
		start := time.Now()
		tx, err := h.conn.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("historian %s: migrate points: %w", h.path, err)
		}
		defer tx.Rollback()
		for _, q := range []string{
			`CREATE TABLE points_unkeyed (tag_id INTEGER NOT NULL, ts TIMESTAMPTZ NOT NULL, value DOUBLE,
	value_int BIGINT, value_str VARCHAR, quality UTINYINT NOT NULL)`,
			`INSERT INTO points_unkeyed SELECT tag_id, ts, value, value_int, value_str, quality FROM points ORDER BY ts`,
			`DROP TABLE points`,
			`ALTER TABLE points_unkeyed RENAME TO points`,
		} {
			if _, err := tx.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("historian %s: migrate points: %w", h.path, err)
			}
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("historian %s: migrate points: %w", h.path, err)
		}
		h.log.Info("points table rebuilt without its primary key", "took", time.Since(start))
	}
	if err := h.loadHoursBuilt(ctx); err != nil {
		return err
	}
	return h.loadNewest(ctx)
}

func (h *Historian) writeBatch(ctx context.Context, samples []uns.Sample) error {
	ids, err := h.ensureTags(ctx, samples)
	if err != nil {
		return err
	}
	// Sort new from late. newest moves forward before the commit: if
	// the commit fails, it is ahead of the table, which only sends a
	// sample of a redelivery down the late path, never a copy to the
	// table. New values are added to their minute's sums (sums.go); the
	// minutes they cannot go to are marked for a rescan.
	var late []int
	var lo, hi time.Time
	var dirty, opened []rollupMark
	var seen map[rollupMark]struct{}
	mark := func(k rollupMark) {
		if _, dup := h.marked[k]; dup {
			return
		}
		if _, dup := seen[k]; dup {
			return
		}
		if seen == nil {
			seen = map[rollupMark]struct{}{}
		}
		seen[k] = struct{}{}
		dirty = append(dirty, k)
	}
	for i := range samples {
		s := &samples[i]
		id := ids[i]
		prev, ok := h.newest.get(id)
		if ok && !s.TS.After(prev) {
			if len(late) == 0 || s.TS.Before(lo) {
				lo = s.TS
			}
			if len(late) == 0 || s.TS.After(hi) {
				hi = s.TS
			}
			late = append(late, i)
			h.sumLate(id, s.TS)
			mark(rollupMark{id, unixMinute(s.TS)})
			continue
		}
		h.newest.set(id, s.TS)
		open, d := h.sumNew(id, s, prev)
		if open {
			opened = append(opened, rollupMark{id, unixMinute(s.TS)})
		} else if d {
			mark(rollupMark{id, unixMinute(s.TS)})
		}
	}
	// Values that are all new and open no minute go in with the appender's
	// own commit, the way DuckDB appends fastest (inside an explicit
	// transaction the rows go to the transaction's storage first and are
	// merged at the commit: a third more time at 100,000 tags). The rest
	// take one transaction, so that their rollup marks are committed with
	// them. Either is idempotent: a redelivery finds the new values stored
	// (the newest timestamps are loaded from the table) and sends them
	// down the late path, which skips what is stored.
	err = h.conn.Raw(func(dc any) error {
		c := dc.(driver.Conn)
		if len(late) == 0 && len(dirty) == 0 && len(opened) == 0 {
			if err := appendPoints(c, "", "points", samples, ids, nil, false); err != nil {
				return fmt.Errorf("historian: append %d values: %w", len(samples), err)
			}
			return nil
		}
		ex := dc.(driver.ExecerContext)
		if _, err := ex.ExecContext(ctx, `BEGIN TRANSACTION`, nil); err != nil {
			return fmt.Errorf("historian: begin: %w", err)
		}
		done := false
		defer func() {
			if !done {
				ex.ExecContext(context.Background(), `ROLLBACK`, nil)
			}
		}()
		if err := appendPoints(c, "", "points", samples, ids, late, false); err != nil {
			return fmt.Errorf("historian: append %d values: %w", len(samples)-len(late), err)
		}
		if len(late) > 0 {
			if err := h.mergeLate(ctx, c, ex, samples, ids, late, lo, hi); err != nil {
				return err
			}
		}
		if err := writeMarks(c, dirty, opened); err != nil {
			return err
		}
		if _, err := ex.ExecContext(ctx, `COMMIT`, nil); err != nil {
			return fmt.Errorf("historian: commit batch of %d: %w", len(samples), err)
		}
		done = true
		return nil
	})
	if err != nil {
		h.taintSums()
		return err
	}
	for _, k := range dirty { // known to be in the table only now
		h.marked[k] = struct{}{}
	}
	return nil
}

// appendPoints appends the samples not in late (in late, with their index
// as seq, when onlyLate) to a table of the points' shape.
func appendPoints(c driver.Conn, catalog, table string, samples []uns.Sample, ids []int32, late []int, onlyLate bool) error {
	// A batch of floats alone (the common case) leaves out the integer and
	// text columns, which then take their default, NULL: the appender sets
	// a NULL with a call into DuckDB of its own, two a row otherwise.
	floats := true
	for i := range samples {
		if k := samples[i].Value.Kind; k != uns.KindFloat && k != uns.KindNull {
			floats = false
			break
		}
	}
	var app *duckdb.Appender
	var err error
	if floats {
		cols := []string{"tag_id", "ts", "value", "quality"}
		if onlyLate {
			cols = append([]string{"seq"}, cols...)
		}
		app, err = duckdb.NewAppenderWithColumns(c, catalog, "", table, cols)
	} else {
		app, err = duckdb.NewAppender(c, catalog, "", table)
	}
	if err != nil {
		return err
	}
	row := func(i int) error {
		s := &samples[i]
		var f, iv, sv any
		if v, ok := numeric(s.Value); ok { // as the minute sums take it
			f = v
		}
		switch {
		case floats && onlyLate:
			return app.AppendRow(int32(i), ids[i], s.TS, f, uint8(s.Quality))
		case floats:
			return app.AppendRow(ids[i], s.TS, f, uint8(s.Quality))
		}
		switch s.Value.Kind {
		case uns.KindInt, uns.KindBool:
			iv = s.Value.I
		case uns.KindString:
			sv = s.Value.S
		}
		if onlyLate {
			return app.AppendRow(int32(i), ids[i], s.TS, f, iv, sv, uint8(s.Quality))
		}
		return app.AppendRow(ids[i], s.TS, f, iv, sv, uint8(s.Quality))
	}
	if onlyLate {
		for _, i := range late {
			if err = row(i); err != nil {
				break
			}
		}
	} else {
		next := 0 // of late
		for i := range samples {
			if next < len(late) && late[next] == i {
				next++
				continue
			}
			if err = row(i); err != nil {
				break
			}
		}
	}
	if err != nil {
		app.Close()
		return err
	}
	return app.Close()
}

// mergeLate stores the late samples that are not stored yet, in the
// caller's transaction; lo and hi bound their timestamps.
func (h *Historian) mergeLate(ctx context.Context, c driver.Conn, ex driver.ExecerContext, samples []uns.Sample, ids []int32, late []int, lo, hi time.Time) error {
	if _, err := ex.ExecContext(ctx, lateTable, nil); err != nil {
		return fmt.Errorf("historian: late values: %w", err)
	}
	if err := appendPoints(c, "temp", "late_points", samples, ids, late, true); err != nil {
		return fmt.Errorf("historian: %d late values: %w", len(late), err)
	}
	bounds := []driver.NamedValue{{Ordinal: 1, Value: lo}, {Ordinal: 2, Value: hi}}
	for _, st := range []struct {
		q    string
		args []driver.NamedValue
	}{
		{lateFirst, nil},
		{lateReplace, bounds},
		{lateInsert, bounds},
		{`DELETE FROM late_points`, nil},
		{`DROP TABLE late_first`, nil},
	} {
		if _, err := ex.ExecContext(ctx, st.q, st.args); err != nil {
			return fmt.Errorf("historian: merge %d late values from %s to %s: %w", len(late), lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano), err)
		}
	}
	return nil
}
