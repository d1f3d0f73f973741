package historian

import (
	"context"
	"fmt"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// Exceedance is one period of a report's day in which an alarm's limit
// was exceeded: from a raise to its clear.
type Exceedance struct {
	Alarm    string     `json:"alarm"`
	Tag      string     `json:"tag"`
	Limit    float64    `json:"limit"`
	Start    time.Time  `json:"start"`
	End      *time.Time `json:"end,omitempty"` // none: still exceeded at the end of the day
	Seconds  float64    `json:"seconds"`       // within the day
	Peak     *float64   `json:"peak,omitempty"`
	Priority string     `json:"priority"`
}

// ExceedanceReport is a day's exceedances of the alarms of a class, and
// the seconds each alarm was exceeded within the day.
type ExceedanceReport struct {
	Day         string             `json:"day"`
	Class       string             `json:"class"`
	Exceedances []*Exceedance      `json:"exceedances"`
	Seconds     map[string]float64 `json:"seconds_exceeded"`
}

// reportLookback is how long before the day a raise is looked for: an
// exceedance that began before it and lasted into the day counts.
const reportLookback = 7 * 24 * time.Hour

// maxReportRows bounds the journal rows a report reads.
const maxReportRows = 10000

// Exceedances reports the day (UTC, from its midnight) for the alarms of
// class: every period from a raise to its clear that overlaps the day,
// with its duration within the day and the highest value its tag reached
// meanwhile (the value at the raise when no points are kept).
func (h *Historian) Exceedances(ctx context.Context, class string, day time.Time) (ExceedanceReport, error) {
	day = day.UTC().Truncate(24 * time.Hour)
	end := day.Add(24 * time.Hour)
	rep := ExceedanceReport{Day: day.Format(time.DateOnly), Class: class, Exceedances: []*Exceedance{}, Seconds: map[string]float64{}}
	trs, err := h.Journal(ctx, JournalQuery{Class: class, From: day.Add(-reportLookback), To: end, Limit: maxReportRows})
	if err != nil {
		return rep, fmt.Errorf("exceedances of %s on %s: %w", class, rep.Day, err)
	}
	open := map[string]*Exceedance{}
	var all []*Exceedance
	for _, tr := range trs {
		switch tr.Event {
		case uns.EventRaise:
			e := &Exceedance{Alarm: tr.Alarm, Tag: tr.Tag, Limit: tr.Limit, Start: tr.TS, Priority: tr.Priority, Peak: tr.Value}
			open[tr.Alarm] = e
			all = append(all, e)
		case uns.EventClear:
			if e, ok := open[tr.Alarm]; ok {
				t := tr.TS
				e.End = &t
				delete(open, tr.Alarm)
			}
		}
	}
	for _, e := range all {
		stop := end
		if e.End != nil && e.End.Before(end) {
			stop = *e.End
		}
		start := e.Start
		if e.Start.Before(day) {
			start = day
		}
		// An exceedance raised and cleared in the same instant of the day
		// still counts, with no duration.
		if !stop.After(start) && !(e.Start.Equal(start) && e.End != nil && e.End.Equal(e.Start)) {
			continue
		}
		e.Seconds = stop.Sub(start).Seconds()
		dev, _, _ := uns.SplitAlarmPath(e.Alarm)
		bs, err := h.Aggregate(ctx, uns.Path(dev+"/"+e.Tag), start, stop, stop.Sub(start)+time.Second, AggMax)
		if err == nil && len(bs) > 0 && bs[0].Value != nil {
			e.Peak = bs[0].Value
		}
		rep.Exceedances = append(rep.Exceedances, e)
		rep.Seconds[e.Alarm] += e.Seconds
	}
	return rep, nil
}
