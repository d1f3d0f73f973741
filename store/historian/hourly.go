package historian

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

// Hour rollups. A chart of a year of one tag reads the minute rollups of
// that tag, 525,600 rows, and the minute rollups of every tag lie in the
// order they were written, minute by minute: the read scans them all (a
// year of 100 tags, 52 M rows: 180 ms, BenchmarkTrendYearOfMany). Closed
// hours are therefore summed from the minutes into rollup_1h, a row per
// tag and hour, written a day at a time in (tag, hour) order. A chart whose
// buckets span two hours or more reads the hours where they are built and
// current, and the minutes elsewhere: the first and last partial hours,
// the hours not built yet, and the stale ones.
//
// An hour is stale when a minute of it was written again after the hour
// was built (late values, a backlog's values); the maintenance builds it
// again. rollup_1h has no key, so that building costs no index: an hour is
// deleted and inserted whole in one transaction, and the hours before
// rollup_1h_built's mark are built.

// hourAfter is how long after its end an hour is built: its minutes are
// written by then (a minute is closed a few seconds after its end), and
// what comes later makes it stale.
const hourAfter = 10 * time.Minute

// hoursPerBuild is the most hours one transaction builds.
const hoursPerBuild = 24

// hourChartBucket is the narrowest chart bucket read from hour rollups.
const hourChartBucket = 2 * time.Hour

const hourlySchema = `
CREATE TABLE IF NOT EXISTS rollup_1h (
	tag_id INTEGER NOT NULL,
	bucket TIMESTAMPTZ NOT NULL,
	n      BIGINT NOT NULL,
	sum    DOUBLE,
	vmin   DOUBLE,
	vmax   DOUBLE,
	ts_min TIMESTAMPTZ,
	ts_max TIMESTAMPTZ
);
CREATE TABLE IF NOT EXISTS rollup_1h_built (upto TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS rollup_1h_stale (bucket TIMESTAMPTZ PRIMARY KEY);
`

// markStaleHours is run in the transaction that writes minute rollups:
// the hours already built that the minutes in the table src (column
// bucket, rows selected by where) belong to are stale.
func markStaleHours(src, where string) string {
	return `INSERT OR IGNORE INTO rollup_1h_stale SELECT DISTINCT time_bucket(INTERVAL 1 HOUR, bucket) FROM ` + src + `
WHERE ` + where + ` AND bucket < (SELECT coalesce(max(upto), '-infinity'::TIMESTAMPTZ) FROM rollup_1h_built)`
}

// loadHoursBuilt reads the mark of the hours built.
func (h *Historian) loadHoursBuilt(ctx context.Context) error {
	var upto sql.NullTime
	if err := h.conn.QueryRowContext(ctx, `SELECT max(upto) FROM rollup_1h_built`).Scan(&upto); err != nil {
		return fmt.Errorf("historian: hour rollups: %w", err)
	}
	h.hoursBuilt.Store(upto.Time.UTC().Unix())
	if !upto.Valid {
		h.hoursBuilt.Store(0)
	}
	return nil
}

// BuildHours builds the hour rollups of the hours that ended hourAfter
// before now and are not built yet, and builds the stale ones again; it
// returns how many hours it built. The writer waits for each transaction
// of at most hoursPerBuild hours.
func (h *Historian) BuildHours(ctx context.Context, now time.Time) (int, error) {
	ready := now.Add(-hourAfter).Truncate(time.Hour)
	total := 0
	for ctx.Err() == nil {
		n, err := h.buildNextHours(ctx, ready)
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
	return total, ctx.Err()
}

// buildNextHours builds the next hours up to ready, or else stale ones,
// at most hoursPerBuild of them; it returns how many.
func (h *Historian) buildNextHours(ctx context.Context, ready time.Time) (int, error) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	var from, to time.Time
	built := h.hoursBuilt.Load()
	if built == 0 {
		var first sql.NullTime
		if err := h.conn.QueryRowContext(ctx, `SELECT time_bucket(INTERVAL 1 HOUR, min(bucket)) FROM rollup_1m`).Scan(&first); err != nil {
			return 0, h.renewConn(fmt.Errorf("historian: hour rollups: %w", err))
		}
		if !first.Valid {
			return 0, nil // no minutes yet
		}
		from = first.Time.UTC()
	} else {
		from = time.Unix(built, 0).UTC()
	}
	if from.Before(ready) {
		to = from.Add(hoursPerBuild * time.Hour)
		if ready.Before(to) {
			to = ready
		}
		if err := h.buildHours(ctx, from, to, true); err != nil {
			return 0, err
		}
		h.hoursBuilt.Store(to.Unix())
		return int(to.Sub(from) / time.Hour), nil
	}
	// Nothing new: the oldest stale hours, a day's worth at most.
	var lo, hi sql.NullTime
	if err := h.conn.QueryRowContext(ctx, `SELECT min(bucket), max(bucket) FROM (SELECT bucket FROM rollup_1h_stale ORDER BY bucket LIMIT ?)`, hoursPerBuild).Scan(&lo, &hi); err != nil {
		return 0, h.renewConn(fmt.Errorf("historian: stale hour rollups: %w", err))
	}
	if !lo.Valid {
		return 0, nil
	}
	from, to = lo.Time.UTC(), hi.Time.UTC().Add(time.Hour)
	if err := h.buildHours(ctx, from, to, false); err != nil {
		return 0, err
	}
	return int(to.Sub(from) / time.Hour), nil
}

// buildHours (re)writes the hour rollups of [from, to) in one transaction:
// all of them when fresh (they were not built), else the stale ones.
func (h *Historian) buildHours(ctx context.Context, from, to time.Time, fresh bool) error {
	tx, err := h.conn.BeginTx(ctx, nil)
	if err != nil {
		return h.renewConn(fmt.Errorf("historian: hour rollups: %w", err))
	}
	defer tx.Rollback()
	which := `time_bucket(INTERVAL 1 HOUR, bucket) IN (SELECT bucket FROM rollup_1h_stale WHERE bucket >= $1 AND bucket < $2)`
	if fresh {
		which = `TRUE`
	}
	span := []any{from, to}
	steps := []sqlStep{
		{`DELETE FROM rollup_1h WHERE bucket >= $1 AND bucket < $2 AND ` + which, span},
		{`INSERT INTO rollup_1h
SELECT tag_id, time_bucket(INTERVAL 1 HOUR, bucket) AS hour, sum(n), sum(sum), min(vmin), max(vmax), arg_min(ts_min, vmin), arg_max(ts_max, vmax)
FROM rollup_1m WHERE bucket >= $1 AND bucket < $2 AND ` + which + `
GROUP BY ALL ORDER BY tag_id, hour`, span},
		{`DELETE FROM rollup_1h_stale WHERE bucket >= $1 AND bucket < $2`, span},
	}
	if fresh {
		steps = append(steps, sqlStep{`DELETE FROM rollup_1h_built`, nil}, sqlStep{`INSERT INTO rollup_1h_built VALUES ($1)`, []any{to}})
	}
	for _, st := range steps {
		if _, err := tx.ExecContext(ctx, st.q, st.args...); err != nil {
			return h.renewConn(fmt.Errorf("historian: hour rollups from %s to %s: %w", from.Format(time.RFC3339), to.Format(time.RFC3339), err))
		}
	}
	if err := tx.Commit(); err != nil {
		return h.renewConn(fmt.Errorf("historian: hour rollups from %s to %s: %w", from.Format(time.RFC3339), to.Format(time.RFC3339), err))
	}
	return nil
}

// sqlStep is a statement of a transaction and its arguments.
type sqlStep struct {
	q    string
	args []any
}

// hourPass is the maintenance's turn at the hour rollups.
func (h *Historian) hourPass(ctx context.Context) {
	began := time.Now()
	n, err := h.BuildHours(ctx, began)
	if err != nil && ctx.Err() == nil {
		h.log.Warn("hour rollups not built; trying again", "err", err)
	} else if n > 0 {
		h.log.Debug("hour rollups", "hours", n, "took", time.Since(began).Round(time.Millisecond))
	}
}

// hourSpan is the hours of a chart from..to that the hour rollups may
// answer: those in [lo, hi) that are built. Minutes before from's next
// hour, from to's hour on, and of hours not built come from the minute
// rollups.
func (h *Historian) hourSpan(from, to time.Time) (lo, hi time.Time) {
	lo = from.Truncate(time.Minute)
	if t := lo.Truncate(time.Hour); !t.Equal(lo) {
		lo = t.Add(time.Hour)
	}
	hi = to.Truncate(time.Minute).Add(time.Minute).Truncate(time.Hour)
	if built := time.Unix(h.hoursBuilt.Load(), 0); h.hoursBuilt.Load() == 0 || built.Before(hi) {
		hi = built
	}
	if hi.Before(lo) {
		hi = lo
	}
	return lo.UTC(), hi.UTC()
}

// maxMinuteRanges bounds the ranges of minutes a chart reads beside the
// hours (the stale hours' runs among them); beyond it, the chart reads
// the minutes alone.
const maxMinuteRanges = 16

// hourQuery is the rows of a chart from the hour and minute rollups: sql
// selects (bucket, ts_min, vmin, ts_max, vmax) with the tag id as $1, the
// chart's first minute as $2 and its end as $3, and args from $first on.
type hourQuery struct {
	sql  string
	args []any
}

// hourSources makes the chart's rows from the hours built and not stale,
// and from the minutes of the ranges between them: each is a range of its
// own, so that DuckDB reads only the row groups of its time. An empty
// query means the minutes alone (nothing built in range, or too many
// stale runs).
func (h *Historian) hourSources(ctx context.Context, from, to time.Time, first int) (hourQuery, error) {
	lo, hi := h.hourSpan(from, to)
	if !hi.After(lo) {
		return hourQuery{}, nil
	}
	rows, err := h.db.QueryContext(ctx, `SELECT bucket FROM rollup_1h_stale WHERE bucket >= ? AND bucket < ? ORDER BY bucket`, lo, hi)
	if err != nil {
		return hourQuery{}, err
	}
	defer rows.Close()
	type span struct{ from, to time.Time }
	var stale []span // runs of stale hours
	for rows.Next() {
		var b time.Time
		if err := rows.Scan(&b); err != nil {
			return hourQuery{}, err
		}
		if n := len(stale); n > 0 && stale[n-1].to.Equal(b) {
			stale[n-1].to = b.Add(time.Hour)
		} else {
			stale = append(stale, span{b, b.Add(time.Hour)})
		}
	}
	if err := rows.Err(); err != nil {
		return hourQuery{}, err
	}
	if len(stale)+2 > maxMinuteRanges {
		return hourQuery{}, nil
	}
	q := hourQuery{}
	arg := func(v any) string {
		q.args = append(q.args, v)
		return fmt.Sprintf("$%d", first+len(q.args)-1)
	}
	var b strings.Builder
	b.WriteString(`SELECT bucket, ts_min, vmin, ts_max, vmax FROM rollup_1h WHERE tag_id = $1 AND bucket >= ` + arg(lo) + ` AND bucket < ` + arg(hi))
	for _, s := range stale {
		b.WriteString(` AND NOT (bucket >= ` + arg(s.from) + ` AND bucket < ` + arg(s.to) + `)`)
	}
	minutes := func(lower, upper string) {
		b.WriteString("\nUNION ALL SELECT bucket, ts_min, vmin, ts_max, vmax FROM rollup_1m WHERE tag_id = $1 AND bucket >= " + lower + " AND " + upper)
	}
	minutes("$2", "bucket < "+arg(lo))
	for _, s := range stale {
		minutes(arg(s.from), "bucket < "+arg(s.to))
	}
	minutes(arg(hi), "bucket <= $3")
	q.sql = b.String()
	return q, nil
}
