package historian

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// ErrTooManyPoints is returned for an export larger than its limit.
var ErrTooManyPoints = errors.New("too many points")

// Aggregates a history query can ask for per bucket.
const (
	AggAvg   = "avg"
	AggMin   = "min"
	AggMax   = "max"
	AggFirst = "first"
	AggLast  = "last"
	AggCount = "count"
	AggTWA   = "twa" // time-weighted average, the value held until the next (step)
)

// Aggs lists the aggregates, for checks and messages.
var Aggs = []string{AggAvg, AggMin, AggMax, AggFirst, AggLast, AggCount, AggTWA}

// Bucket is one interval of an aggregate: it starts at TS; Value is nil
// when the bucket holds no value to aggregate.
type Bucket struct {
	TS    time.Time `json:"ts"`
	Value *float64  `json:"value"`
}

// id returns a tag's id.
func (h *Historian) id(p uns.Path) (int32, error) {
	h.idmu.RLock()
	defer h.idmu.RUnlock()
	id, ok := h.ids[p]
	if !ok {
		return 0, fmt.Errorf("%w: %s", ErrUnknownTag, p)
	}
	return id, nil
}

// Aggregate returns one bucket per interval from from (included) to to
// (excluded), aligned on from, of the numeric values of p (bad-quality
// points, such as death markers, have no value and do not count). Every
// bucket is in the answer, empty ones with a nil value (count: 0).
func (h *Historian) Aggregate(ctx context.Context, p uns.Path, from, to time.Time, interval time.Duration, agg string) ([]Bucket, error) {
	return h.aggregate(ctx, p, from, to, interval, agg, true)
}

func (h *Historian) aggregate(ctx context.Context, p uns.Path, from, to time.Time, interval time.Duration, agg string, rollups bool) ([]Bucket, error) {
	if interval <= 0 || !to.After(from) {
		return nil, fmt.Errorf("historian: aggregate %s: empty range or interval", p)
	}
	id, err := h.id(p)
	if err != nil {
		return nil, err
	}
	n := int((to.Sub(from) + interval - 1) / interval)
	out := make([]Bucket, n)
	for i := range out {
		out[i].TS = from.Add(time.Duration(i) * interval).UTC()
	}
	if agg == AggTWA {
		return out, h.twa(ctx, id, p, from, to, interval, out)
	}
	// Whole minutes on minute boundaries: the rollups answer avg, min, max
	// and count, also where the raw points are gone.
	if rollups && interval%time.Minute == 0 && from.Equal(from.Truncate(time.Minute)) && interval/time.Minute >= 5 {
		if expr, ok := map[string]string{AggAvg: "sum(sum) / sum(n)", AggMin: "min(vmin)", AggMax: "max(vmax)", AggCount: "sum(n)::DOUBLE"}[agg]; ok {
			// Minutes not rolled up yet, and what comes after them, are
			// aggregated from the points.
			cut := to
			var dirty sql.NullTime
			if err := h.db.QueryRowContext(ctx, `SELECT min(bucket) FROM (
	SELECT bucket FROM rollup_dirty WHERE tag_id = $1 UNION ALL SELECT bucket FROM rollup_open WHERE tag_id = $1)`, id).Scan(&dirty); err != nil {
				return nil, fmt.Errorf("historian: aggregate %s: %w", p, err)
			}
			if dirty.Valid && dirty.Time.Before(to) {
				cut = from.Add(max(dirty.Time.Sub(from), 0) / interval * interval)
			}
			if err := h.aggregateRollup(ctx, id, p, from, cut, interval, expr, out); err != nil {
				return nil, err
			}
			if cut.Before(to) {
				rest, err := h.aggregate(ctx, p, cut, to, interval, agg, false)
				if err != nil {
					return nil, err
				}
				copy(out[cut.Sub(from)/interval:], rest)
			}
			return out, nil
		}
	}
	expr := map[string]string{AggAvg: "avg(value)", AggMin: "min(value)", AggMax: "max(value)",
		AggFirst: "arg_min(value, ts) FILTER (WHERE value IS NOT NULL)", AggLast: "arg_max(value, ts) FILTER (WHERE value IS NOT NULL)",
		AggCount: "count(value)::DOUBLE"}[agg]
	if expr == "" {
		return nil, fmt.Errorf("historian: aggregate %q: want one of %v", agg, Aggs)
	}
	q := `SELECT (epoch_us(ts) - ?) // ? AS b, ` + expr + ` FROM points
WHERE tag_id = ? AND ts >= ? AND ts < ? GROUP BY b ORDER BY b`
	rows, err := h.db.QueryContext(ctx, q, from.UnixMicro(), interval.Microseconds(), id, from, to)
	if err != nil {
		return nil, fmt.Errorf("historian: aggregate %s: %w", p, err)
	}
	defer rows.Close()
	for rows.Next() {
		var b int64
		var v sql.NullFloat64
		if err := rows.Scan(&b, &v); err != nil {
			return nil, fmt.Errorf("historian: aggregate %s: %w", p, err)
		}
		if b >= 0 && b < int64(n) && v.Valid {
			out[b].Value = &v.Float64
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("historian: aggregate %s: %w", p, err)
	}
	if agg == AggCount {
		for i := range out {
			if out[i].Value == nil {
				out[i].Value = new(float64)
			}
		}
	}
	return out, nil
}

// twa fills buckets with time-weighted averages: each value holds from its
// time until the next point (step interpolation), the value before from
// included; a bad point holds no value, and that time does not count.
func (h *Historian) twa(ctx context.Context, id int32, p uns.Path, from, to time.Time, interval time.Duration, out []Bucket) error {
	type step struct {
		ts time.Time
		v  float64
		ok bool
	}
	var steps []step
	// The value held at from.
	var v sql.NullFloat64
	var ts time.Time
	err := h.db.QueryRowContext(ctx, `SELECT ts, value FROM points WHERE tag_id = ? AND ts < ? ORDER BY ts DESC LIMIT 1`, id, from).Scan(&ts, &v)
	switch {
	case err == nil:
		steps = append(steps, step{from, v.Float64, v.Valid})
	case err != sql.ErrNoRows:
		return fmt.Errorf("historian: twa %s: %w", p, err)
	}
	rows, err := h.db.QueryContext(ctx, `SELECT ts, value FROM points WHERE tag_id = ? AND ts >= ? AND ts < ? ORDER BY ts`, id, from, to)
	if err != nil {
		return fmt.Errorf("historian: twa %s: %w", p, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := rows.Scan(&ts, &v); err != nil {
			return fmt.Errorf("historian: twa %s: %w", p, err)
		}
		steps = append(steps, step{ts, v.Float64, v.Valid && !math.IsNaN(v.Float64)})
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("historian: twa %s: %w", p, err)
	}
	sum := make([]float64, len(out))
	dur := make([]float64, len(out))
	for i, s := range steps {
		if !s.ok {
			continue
		}
		end := to
		if i+1 < len(steps) {
			end = steps[i+1].ts
		}
		// Spread [s.ts, end) over the buckets it covers.
		for t := s.ts; t.Before(end); {
			b := int(t.Sub(from) / interval)
			if b >= len(out) {
				break
			}
			bEnd := from.Add(time.Duration(b+1) * interval)
			if end.Before(bEnd) {
				bEnd = end
			}
			d := bEnd.Sub(t).Seconds()
			sum[b] += s.v * d
			dur[b] += d
			t = bEnd
		}
	}
	for i := range out {
		if dur[i] > 0 {
			a := sum[i] / dur[i]
			out[i].Value = &a
		}
	}
	return nil
}

// Downsample returns at most about n points of p in [from, to] for a
// chart n pixels wide: per bucket the lowest and the highest value, in
// time order, so that peaks survive. Points that are not numbers (bad
// quality, strings) are left out.
func (h *Historian) Downsample(ctx context.Context, p uns.Path, from, to time.Time, n int) ([]Point, error) {
	id, err := h.id(p)
	if err != nil {
		return nil, err
	}
	buckets := max(n/2, 1)
	// A chart bucket of ten minutes or more reads the minute rollups.
	if to.Sub(from)/time.Duration(buckets) >= 10*time.Minute {
		return h.downsampleRollup(ctx, id, p, from, to, buckets)
	}
	span := max(to.Sub(from).Microseconds()+1, int64(buckets))
	q := `SELECT min(ts), arg_min(ts, value), min(value), arg_max(ts, value), max(value), min(quality) FROM points
WHERE tag_id = ? AND ts >= ? AND ts <= ? AND value IS NOT NULL
GROUP BY (epoch_us(ts) - ?) * ? // ? ORDER BY 1`
	rows, err := h.db.QueryContext(ctx, q, id, from, to, from.UnixMicro(), int64(buckets), span)
	if err != nil {
		return nil, fmt.Errorf("historian: downsample %s: %w", p, err)
	}
	defer rows.Close()
	var out []Point
	for rows.Next() {
		var first, tMin, tMax time.Time
		var vMin, vMax float64
		var q uint8
		if err := rows.Scan(&first, &tMin, &vMin, &tMax, &vMax, &q); err != nil {
			return nil, fmt.Errorf("historian: downsample %s: %w", p, err)
		}
		out = appendMinMax(out, tMin, vMin, tMax, vMax, uns.Quality(q))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("historian: downsample %s: %w", p, err)
	}
	slices.SortFunc(out, func(a, b Point) int { return a.TS.Compare(b.TS) })
	return out, nil
}

// ExportParquet writes the points of paths in [from, to] to a Parquet file
// (columns path, ts, value, value_int, value_str, quality) and returns it
// open for reading, with how many points it holds. The file is written in
// the historian's exports folder, the one place besides the archive where
// the engine may write, and its name is gone before it is returned: the
// caller's handle is the only way to it, and closing it frees it. More
// than maxPoints points is ErrTooManyPoints, and no file.
func (h *Historian) ExportParquet(ctx context.Context, paths []uns.Path, from, to time.Time, maxPoints int64) (*os.File, int64, error) {
	ids := make([]string, len(paths))
	for i, p := range paths {
		id, err := h.id(p)
		if err != nil {
			return nil, 0, err
		}
		ids[i] = fmt.Sprint(id)
	}
	var count int64
	if err := h.db.QueryRowContext(ctx, `SELECT count(*) FROM points WHERE tag_id IN (`+strings.Join(ids, ",")+`) AND ts >= ? AND ts <= ?`, from, to).Scan(&count); err != nil {
		return nil, 0, fmt.Errorf("historian: parquet export: %w", err)
	}
	if count > maxPoints {
		return nil, 0, fmt.Errorf("%w: %d points, more than the export limit of %d; ask for fewer tags or a shorter range", ErrTooManyPoints, count, maxPoints)
	}
	tmp, err := os.CreateTemp(h.exportDir(), "export-*.parquet")
	if err != nil {
		return nil, 0, fmt.Errorf("historian: parquet export: %w", err)
	}
	name := tmp.Name()
	tmp.Close()
	defer os.Remove(name)
	q := `COPY (SELECT t.path, p.ts, p.value, p.value_int, p.value_str, p.quality
	FROM points p JOIN tags t ON t.id = p.tag_id
	WHERE p.tag_id IN (` + strings.Join(ids, ",") + `) AND p.ts >= ? AND p.ts <= ?
	ORDER BY t.path, p.ts) TO '` + strings.ReplaceAll(filepath.ToSlash(name), "'", "''") + `' (FORMAT parquet)`
	res, err := h.db.ExecContext(ctx, q, from, to)
	if err != nil {
		return nil, 0, fmt.Errorf("historian: parquet export: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, 0, fmt.Errorf("historian: parquet export: %w", err)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, 0, fmt.Errorf("historian: parquet export: %w", err)
	}
	return f, n, nil
}

// aggregateRollup fills buckets from the minute rollups.
func (h *Historian) aggregateRollup(ctx context.Context, id int32, p uns.Path, from, to time.Time, interval time.Duration, expr string, out []Bucket) error {
	rows, err := h.db.QueryContext(ctx, `SELECT (epoch_us(bucket) - ?) // ? AS b, `+expr+` FROM rollup_1m
WHERE tag_id = ? AND bucket >= ? AND bucket < ? GROUP BY b ORDER BY b`, from.UnixMicro(), interval.Microseconds(), id, from, to)
	if err != nil {
		return fmt.Errorf("historian: aggregate %s: %w", p, err)
	}
	defer rows.Close()
	for rows.Next() {
		var b int64
		var v sql.NullFloat64
		if err := rows.Scan(&b, &v); err != nil {
			return fmt.Errorf("historian: aggregate %s: %w", p, err)
		}
		if b >= 0 && b < int64(len(out)) && v.Valid {
			out[b].Value = &v.Float64
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("historian: aggregate %s: %w", p, err)
	}
	if expr == "sum(n)::DOUBLE" {
		for i := range out {
			if out[i].Value == nil {
				out[i].Value = new(float64)
			}
		}
	}
	return nil
}

// Point is one stored value.
type Point struct {
	TS      time.Time
	Value   uns.Value
	Quality uns.Quality
}

// History returns the points of path in [from, to], oldest first, at most
// limit of them (0: no limit).
func (h *Historian) History(ctx context.Context, p uns.Path, from, to time.Time, limit int) ([]Point, error) {
	h.idmu.RLock()
	id, ok := h.ids[p]
	h.idmu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownTag, p)
	}
	q := `SELECT ts, value, value_int, value_str, quality FROM points
WHERE tag_id = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts`
	args := []driver.NamedValue{{Ordinal: 1, Value: id}, {Ordinal: 2, Value: from}, {Ordinal: 3, Value: to}}
	if limit > 0 {
		q += ` LIMIT $4`
		args = append(args, driver.NamedValue{Ordinal: 4, Value: int64(limit)})
	}
	conn, err := h.db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("historian: history %s: %w", p, err)
	}
	defer conn.Close()
	var out []Point
	// The driver's rows, not database/sql's Scan: a day of a tag is
	// 86,400 rows, and Scan's conversions cost more than the query.
	err = conn.Raw(func(dc any) error {
		rows, err := dc.(driver.QueryerContext).QueryContext(ctx, q, args)
		if err != nil {
			return err
		}
		defer rows.Close()
		vals := make([]driver.Value, 5)
		for {
			if err := rows.Next(vals); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			pt := Point{Quality: uns.Quality(asUint8(vals[4]))}
			if ts, ok := vals[0].(time.Time); ok {
				pt.TS = ts.UTC()
			}
			switch {
			case vals[2] != nil:
				i, _ := vals[2].(int64)
				pt.Value = uns.Int(i)
			case vals[1] != nil:
				f, _ := vals[1].(float64)
				pt.Value = uns.Float(f)
			case vals[3] != nil:
				s, _ := vals[3].(string)
				pt.Value = uns.String(s)
			}
			out = append(out, pt)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("historian: history %s: %w", p, err)
	}
	return out, nil
}

// asUint8 reads a UTINYINT the driver hands over.
func asUint8(v driver.Value) uint8 {
	switch n := v.(type) {
	case uint8:
		return n
	case int64:
		return uint8(n)
	}
	return 0
}
