package historian

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// The transforms' records: finished production cycles with their
// aggregates, and the alarm journal. Both are written idempotently (a
// replay after a restart writes the same rows again, to no effect).

// WriteCycles stores finished cycles; a cycle already stored (same
// machine, name and start) is replaced.
func (h *Historian) WriteCycles(ctx context.Context, cycles []uns.Cycle) error {
	if len(cycles) == 0 {
		return nil
	}
	err := h.inTx(ctx, func(tx *sql.Tx) error {
		for _, c := range cycles {
			if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO cycles VALUES (?, ?, ?, ?, ?)`,
				c.Machine, c.Name, c.Start, c.End, c.End.Sub(c.Start).Seconds()); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM cycle_values WHERE machine = ? AND name = ? AND start_ts = ?`, c.Machine, c.Name, c.Start); err != nil {
				return err
			}
			for k, v := range c.Values {
				if _, err := tx.ExecContext(ctx, `INSERT INTO cycle_values VALUES (?, ?, ?, ?, ?)`, c.Machine, c.Name, c.Start, k, v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("historian: %d cycles from %s: %w", len(cycles), cycles[0].Machine, err)
	}
	return nil
}

// inTx runs fn in a transaction on the writer's connection and commits it.
func (h *Historian) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	tx, err := h.conn.BeginTx(ctx, nil)
	if err != nil {
		return h.renewConn(err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return h.renewConn(err)
	}
	return h.renewConn(tx.Commit())
}

// filter is the WHERE clause of a query and its arguments.
type filter struct {
	where []string
	args  []any
}

// eq adds col = v, unless v is empty.
func (f *filter) eq(col, v string) {
	if v != "" {
		f.where = append(f.where, col+" = ?")
		f.args = append(f.args, v)
	}
}

// under adds col is the UNS path p or under it, unless p is empty.
func (f *filter) under(col, p string) {
	if p != "" {
		f.where = append(f.where, "("+col+" = ? OR starts_with("+col+", ?))")
		f.args = append(f.args, p, strings.TrimSuffix(p, "/")+"/")
	}
}

func (f *filter) sql() string { return strings.Join(f.where, " AND ") }

// CycleQuery selects cycles: of machines under a UNS prefix, of a name,
// ending in [From, To], newest first, at most Limit.
type CycleQuery struct {
	Machine  string // a machine's path or a prefix of paths
	Name     string
	From, To time.Time
	Limit    int
}

// Cycles returns the cycles the query selects, oldest first.
func (h *Historian) Cycles(ctx context.Context, q CycleQuery) ([]uns.Cycle, error) {
	f := filter{where: []string{"end_ts >= ?", "end_ts <= ?"}, args: []any{q.From, q.To}}
	f.under("machine", q.Machine)
	f.eq("name", q.Name)
	rows, err := h.db.QueryContext(ctx, `SELECT c.machine, c.name, c.start_ts, c.end_ts, v.aggregate, v.value
FROM (SELECT * FROM cycles WHERE `+f.sql()+` ORDER BY end_ts DESC LIMIT ?) c
LEFT JOIN cycle_values v USING (machine, name, start_ts)
ORDER BY c.end_ts, c.machine, c.name`, append(f.args, q.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("historian: cycles: %w", err)
	}
	defer rows.Close()
	var out []uns.Cycle
	for rows.Next() {
		var c uns.Cycle
		var agg sql.NullString
		var v sql.NullFloat64
		if err := rows.Scan(&c.Machine, &c.Name, &c.Start, &c.End, &agg, &v); err != nil {
			return nil, fmt.Errorf("historian: cycles: %w", err)
		}
		c.Start, c.End = c.Start.UTC(), c.End.UTC()
		if n := len(out); n == 0 || out[n-1].Machine != c.Machine || out[n-1].Name != c.Name || !out[n-1].Start.Equal(c.Start) {
			c.Values = map[string]float64{}
			out = append(out, c)
		}
		if agg.Valid && v.Valid {
			out[len(out)-1].Values[agg.String] = v.Float64
		}
	}
	return out, rows.Err()
}

// WriteTransitions journals alarm transitions; one already journaled
// (same alarm, time and event) is not written again.
func (h *Historian) WriteTransitions(ctx context.Context, trs []uns.Transition) error {
	if len(trs) == 0 {
		return nil
	}
	// Many rows a statement: a statement a row costs the journal's index
	// a block of memory each within the transaction.
	const perStatement = 200
	err := h.inTx(ctx, func(tx *sql.Tx) error {
		for start := 0; start < len(trs); start += perStatement {
			part := trs[start:min(start+perStatement, len(trs))]
			var q strings.Builder
			q.WriteString(`INSERT INTO alarm_journal VALUES `)
			args := make([]any, 0, 14*len(part))
			for i, t := range part {
				if i > 0 {
					q.WriteString(", ")
				}
				q.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
				args = append(args, t.TS, t.Alarm, t.Event, string(t.State), t.Tag, t.Kind, t.Priority, t.Class, t.Value, t.Text, t.Limit, t.User, t.Comment, t.Shelved)
			}
			q.WriteString(` ON CONFLICT DO NOTHING`)
			if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("historian: %d alarm transitions of %s: %w", len(trs), trs[0].Alarm, err)
	}
	return nil
}

// JournalQuery selects alarm transitions: of alarms under a UNS prefix,
// of an event, of a class, in [From, To], at most Limit, newest first.
type JournalQuery struct {
	Alarm    string
	Event    string
	Class    string
	From, To time.Time
	Limit    int
}

// Journal returns the transitions the query selects, oldest first.
func (h *Historian) Journal(ctx context.Context, q JournalQuery) ([]uns.Transition, error) {
	f := filter{where: []string{"ts >= ?", "ts <= ?"}, args: []any{q.From, q.To}}
	f.under("alarm", q.Alarm)
	f.eq("event", q.Event)
	f.eq("class", q.Class)
	rows, err := h.db.QueryContext(ctx, `SELECT * FROM (SELECT ts, alarm, event, state, tag, kind, priority, class, value, text, limit_value, username, comment, shelved_until
FROM alarm_journal WHERE `+f.sql()+` ORDER BY ts DESC, alarm LIMIT ?) ORDER BY ts, alarm`, append(f.args, q.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("historian: alarm journal: %w", err)
	}
	defer rows.Close()
	var out []uns.Transition
	for rows.Next() {
		var t uns.Transition
		var state string
		var v sql.NullFloat64
		var sh sql.NullTime
		if err := rows.Scan(&t.TS, &t.Alarm, &t.Event, &state, &t.Tag, &t.Kind, &t.Priority, &t.Class, &v, &t.Text, &t.Limit, &t.User, &t.Comment, &sh); err != nil {
			return nil, fmt.Errorf("historian: alarm journal: %w", err)
		}
		t.TS, t.State = t.TS.UTC(), uns.AlarmState(state)
		if v.Valid {
			f := v.Float64
			t.Value = &f
		}
		if sh.Valid {
			u := sh.Time.UTC()
			t.Shelved = &u
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
