package historian

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// AlarmStatsQuery selects the alarm journal rows an alarm system
// performance report is made of: alarms under a UNS prefix, of a class, raised
// in [From, To). The report counts raises in windows of Window starting at
// From; a window with more than Flood raises is in flood.
type AlarmStatsQuery struct {
	Alarm    string
	Class    string
	From, To time.Time
	Window   time.Duration
	Flood    int
	// An alarm raised this many times within ChatterWithin chatters
	// (ChatterCount 3, ChatterWithin 1 minute when zero).
	ChatterCount  int
	ChatterWithin time.Duration
	// An alarm standing (raised, not cleared) for longer than Stale at To
	// is stale (24 h when zero).
	Stale time.Duration
	// Top is how many of the most frequent alarms to list (10 when zero).
	Top int
}

// AlarmStats is an alarm system performance report in the terms of
// ISA-18.2 / EEMUA 191: the rate of alarms an operator sees, floods, the
// few alarms that make most of them, chattering and stale alarms.
type AlarmStats struct {
	From       time.Time        `json:"from"`
	To         time.Time        `json:"to"`
	Window     string           `json:"window"`
	Raised     int64            `json:"raised"`
	ByPriority map[string]int64 `json:"by_priority"`
	Windows    int64            `json:"windows"`
	PerWindow  AlarmRate        `json:"per_window"`
	FloodAbove int              `json:"flood_above"`
	FloodShare float64          `json:"flood_share"` // of the windows, 0..1
	Floods     []AlarmFlood     `json:"floods"`
	Frequent   []AlarmCount     `json:"most_frequent"`
	TopShare   float64          `json:"most_frequent_share"` // of the raises, 0..1
	Chattering []AlarmCount     `json:"chattering"`
	Stale      []StaleAlarm     `json:"stale"`
}

// AlarmRate is the average and the highest number of raises in a window.
type AlarmRate struct {
	Average float64 `json:"average"`
	Max     int64   `json:"max"`
}

// AlarmFlood is a run of windows in flood.
type AlarmFlood struct {
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Raised int64     `json:"raised"`
	Peak   int64     `json:"peak"` // raises in its busiest window
}

// AlarmCount is an alarm and how often it did something.
type AlarmCount struct {
	Alarm    string `json:"alarm"`
	Priority string `json:"priority"`
	Count    int64  `json:"count"`
}

// StaleAlarm is an alarm standing since Since.
type StaleAlarm struct {
	Alarm    string    `json:"alarm"`
	Priority string    `json:"priority"`
	Since    time.Time `json:"since"`
}

// AlarmStats reports on the alarm journal (see AlarmStatsQuery).
func (h *Historian) AlarmStats(ctx context.Context, q AlarmStatsQuery) (AlarmStats, error) {
	if q.Window <= 0 || q.Flood <= 0 || !q.From.Before(q.To) {
		return AlarmStats{}, fmt.Errorf("historian: alarm statistics: a window, a flood level and from before to are needed")
	}
	if q.ChatterCount <= 0 {
		q.ChatterCount = 3
	}
	if q.ChatterWithin <= 0 {
		q.ChatterWithin = time.Minute
	}
	if q.Stale <= 0 {
		q.Stale = 24 * time.Hour
	}
	if q.Top <= 0 {
		q.Top = 10
	}
	st := AlarmStats{From: q.From.UTC(), To: q.To.UTC(), Window: q.Window.String(), FloodAbove: q.Flood,
		ByPriority: map[string]int64{}, Floods: []AlarmFlood{}, Frequent: []AlarmCount{}, Chattering: []AlarmCount{}, Stale: []StaleAlarm{}}
	st.Windows = int64((q.To.Sub(q.From) + q.Window - 1) / q.Window)

	// The raises of the range, in a temporary view of this query's own.
	f := filter{where: []string{"event = ?", "ts >= ?", "ts < ?"}, args: []any{uns.EventRaise, q.From, q.To}}
	f.under("alarm", q.Alarm)
	f.eq("class", q.Class)
	raises := `(SELECT ts, alarm, priority FROM alarm_journal WHERE ` + f.sql() + `)`
	fail := func(what string, err error) (AlarmStats, error) {
		return AlarmStats{}, fmt.Errorf("historian: alarm statistics, %s: %w", what, err)
	}

	rows, err := h.db.QueryContext(ctx, `SELECT priority, count(*) FROM `+raises+` GROUP BY priority`, f.args...)
	if err != nil {
		return fail("priorities", err)
	}
	for rows.Next() {
		var p string
		var n int64
		if err := rows.Scan(&p, &n); err != nil {
			rows.Close()
			return fail("priorities", err)
		}
		st.ByPriority[p] = n
		st.Raised += n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail("priorities", err)
	}
	if st.Windows > 0 {
		st.PerWindow.Average = float64(st.Raised) / float64(st.Windows)
	}

	// Raises per window, windows counted from From; runs of windows in
	// flood make one flood.
	win := q.Window.Microseconds()
	rows, err = h.db.QueryContext(ctx, `SELECT (epoch_us(ts) - ?) // ? AS w, count(*) FROM `+raises+` GROUP BY w ORDER BY w`,
		append([]any{q.From.UnixMicro(), win}, f.args...)...)
	if err != nil {
		return fail("windows", err)
	}
	var flooded int64
	var cur *AlarmFlood
	last := int64(-2)
	for rows.Next() {
		var w, n int64
		if err := rows.Scan(&w, &n); err != nil {
			rows.Close()
			return fail("windows", err)
		}
		st.PerWindow.Max = max(st.PerWindow.Max, n)
		if n <= int64(q.Flood) {
			continue
		}
		flooded++
		start := q.From.Add(time.Duration(w) * q.Window).UTC()
		if cur == nil || w != last+1 {
			st.Floods = append(st.Floods, AlarmFlood{Start: start})
			cur = &st.Floods[len(st.Floods)-1]
		}
		cur.End = start.Add(q.Window)
		if cur.End.After(st.To) {
			cur.End = st.To
		}
		cur.Raised += n
		cur.Peak = max(cur.Peak, n)
		last = w
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fail("windows", err)
	}
	if st.Windows > 0 {
		st.FloodShare = float64(flooded) / float64(st.Windows)
	}

	var err2 error
	if st.Frequent, err2 = h.alarmCounts(ctx, `SELECT alarm, any_value(priority), count(*) AS n FROM `+raises+`
GROUP BY alarm ORDER BY n DESC, alarm LIMIT ?`, append(f.args, q.Top)...); err2 != nil {
		return fail("most frequent", err2)
	}
	var top int64
	for _, c := range st.Frequent {
		top += c.Count
	}
	if st.Raised > 0 {
		st.TopShare = float64(top) / float64(st.Raised)
	}
	// A raise that is the ChatterCount-th within ChatterWithin counts once.
	if st.Chattering, err2 = h.alarmCounts(ctx, `SELECT alarm, any_value(priority), count(*) AS n FROM (
	SELECT alarm, priority, ts, lag(ts, `+strconv.Itoa(q.ChatterCount-1)+`) OVER (PARTITION BY alarm ORDER BY ts) AS before FROM `+raises+`)
WHERE before IS NOT NULL AND epoch_us(ts) - epoch_us(before) <= ?
GROUP BY alarm ORDER BY n DESC, alarm`, append(f.args, q.ChatterWithin.Microseconds())...); err2 != nil {
		return fail("chattering", err2)
	}

	// Standing at To: the last raise or clear before To is a raise, older
	// than Stale.
	sf := filter{where: []string{"event IN (?, ?)", "ts < ?"}, args: []any{uns.EventRaise, uns.EventClear, q.To}}
	sf.under("alarm", q.Alarm)
	sf.eq("class", q.Class)
	srows, err := h.db.QueryContext(ctx, `SELECT alarm, arg_max(priority, ts), arg_max(event, epoch_us(ts) * 2 + (event = 'clear')::BIGINT) AS ev, max(ts) AS since
FROM alarm_journal WHERE `+sf.sql()+` GROUP BY alarm
HAVING ev = ? AND since < ? ORDER BY since, alarm`, append(sf.args, uns.EventRaise, q.To.Add(-q.Stale))...)
	if err != nil {
		return fail("stale", err)
	}
	defer srows.Close()
	for srows.Next() {
		var s StaleAlarm
		var ev string
		if err := srows.Scan(&s.Alarm, &s.Priority, &ev, &s.Since); err != nil {
			return fail("stale", err)
		}
		s.Since = s.Since.UTC()
		st.Stale = append(st.Stale, s)
	}
	if err := srows.Err(); err != nil {
		return fail("stale", err)
	}
	return st, nil
}

// alarmCounts runs a query of (alarm, priority, count) rows.
func (h *Historian) alarmCounts(ctx context.Context, q string, args ...any) ([]AlarmCount, error) {
	rows, err := h.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []AlarmCount{}
	for rows.Next() {
		var c AlarmCount
		var p sql.NullString
		if err := rows.Scan(&c.Alarm, &p, &c.Count); err != nil {
			return nil, err
		}
		c.Priority = p.String
		out = append(out, c)
	}
	return out, rows.Err()
}
