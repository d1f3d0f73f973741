package web

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/calx-iiot/calx/store/historian"
	"github.com/calx-iiot/calx/transform"
	"github.com/calx-iiot/calx/uns"
)

// maxRows bounds the rows of a journal or cycle list.
const maxRows = 10000

// limitParam reads ?limit= (default def, at most maxRows).
func limitParam(r *http.Request, def int) (int, error) {
	q := r.URL.Query().Get("limit")
	if q == "" {
		return def, nil
	}
	n, err := strconv.Atoi(q)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("limit: %q is not a positive whole number", q)
	}
	if n > maxRows {
		return 0, fmt.Errorf("limit: %d is more than the %d rows one request may ask for", n, maxRows)
	}
	return n, nil
}

// pathParam reads an optional UNS path or prefix parameter.
func pathParam(r *http.Request, name string) (string, error) {
	p := r.URL.Query().Get(name)
	if p == "" {
		return "", nil
	}
	if err := uns.Path(p).Validate(); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

// timeRange reads ?from= and ?to= (defaults: the last day).
func timeRange(r *http.Request) (from, to time.Time, err error) {
	now := time.Now()
	if to, err = parseTime(r.URL.Query().Get("to"), "to", now); err != nil {
		return
	}
	if from, err = parseTime(r.URL.Query().Get("from"), "from", to.Add(-24*time.Hour)); err != nil {
		return
	}
	if from.After(to) {
		err = fmt.Errorf("from: %s is after to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return
}

// alarms lists the alarms of the transforms and their state; filters:
// ?device= (a UNS prefix), ?state=, ?priority=, ?class=, ?active=true
// (in any state but normal), ?shelved=true|false, ?suppressed=true|false
// (by design, AlarmDef.SuppressWhen).
func (s *Server) alarms(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	dev, err := pathParam(r, "device")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	states := []string{string(transform.StateNormal), string(transform.StateUnacked), string(transform.StateAcked), string(transform.StateClearedUnack)}
	if st := q.Get("state"); st != "" && !slices.Contains(states, st) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("state %q: one of %v", st, states))
		return
	}
	if p := q.Get("priority"); p != "" && !slices.Contains(transform.Priorities, p) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("priority %q: one of %v", p, transform.Priorities))
		return
	}
	boolParam := func(name string) (*bool, error) {
		v := q.Get(name)
		if v == "" {
			return nil, nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %q is not true or false", name, v)
		}
		return &b, nil
	}
	active, err := boolParam("active")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var shelved, suppressed *bool
	for _, p := range []struct {
		name string
		into **bool
	}{{"shelved", &shelved}, {"suppressed", &suppressed}} {
		if *p.into, err = boolParam(p.name); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	all, err := s.c.alarms.Alarms(r.Context())
	if err != nil {
		writeError(w, statusOf(err), err.Error()) // the transforms' node unreachable, in a cluster
		return
	}
	out := []transform.AlarmStatus{}
	sc := scopeOf(r)
	for _, a := range all {
		switch {
		case !sc.Covers(a.Path):
		case dev != "" && a.Device != dev && !strings.HasPrefix(a.Device, dev+"/"):
		case q.Get("state") != "" && string(a.State) != q.Get("state"):
		case q.Get("priority") != "" && a.Priority != q.Get("priority"):
		case q.Get("class") != "" && a.Class != q.Get("class"):
		case active != nil && (a.State != transform.StateNormal) != *active:
		case shelved != nil && (a.ShelvedUntil != nil) != *shelved:
		case suppressed != nil && a.Suppressed != *suppressed:
		default:
			out = append(out, a)
		}
	}
	// Most urgent first, then the oldest.
	rank := func(a transform.AlarmStatus) int { return slices.Index(transform.Priorities, a.Priority) }
	sort.SliceStable(out, func(i, j int) bool {
		if ri, rj := rank(out[i]), rank(out[j]); ri != rj {
			return ri > rj
		}
		return out[i].Path < out[j].Path
	})
	writeJSON(w, http.StatusOK, map[string]any{"count": len(out), "alarms": out})
}

// alarmJournal lists alarm transitions: ?alarm= (a UNS prefix), ?event=,
// ?class=, ?from=, ?to= (default the last day), ?limit= (default 1000).
func (s *Server) alarmJournal(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	alarm, err := pathParam(r, "alarm")
	if err == nil {
		var n int
		if n, err = limitParam(r, 1000); err == nil {
			var from, to time.Time
			if from, to, err = timeRange(r); err == nil {
				if ev := q.Get("event"); ev != "" && !slices.Contains(transform.AlarmEvents, ev) {
					err = fmt.Errorf("event %q: one of %v", ev, transform.AlarmEvents)
				} else {
					trs, err := acrossScope(r, alarm, n, func(t transform.Transition) time.Time { return t.TS }, func(pre string) ([]transform.Transition, error) {
						return s.c.history.Journal(r.Context(), historian.JournalQuery{Alarm: pre, Event: q.Get("event"), Class: q.Get("class"), From: from, To: to, Limit: n})
					})
					if err != nil {
						writeError(w, http.StatusInternalServerError, err.Error())
						return
					}
					writeJSON(w, http.StatusOK, map[string]any{"count": len(trs), "transitions": trs})
					return
				}
			}
		}
	}
	writeError(w, http.StatusBadRequest, err.Error())
}

// alarmStatistics reports on the alarm system's performance over ?from=,
// ?to= (default the last day), for alarms under ?alarm= and of ?class=:
// raises per ?window= (default 10m) against a flood level of more than
// ?flood= (default 10) a window, the ?top= (default 10) most frequent
// alarms, alarms raised ?chatter= (default 3) times within
// ?chatter_within= (default 1m), alarms standing longer than ?stale=
// (default 24h).
func (s *Server) alarmStatistics(w http.ResponseWriter, r *http.Request) {
	q, err := alarmStatsQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if sc := scopeOf(r); !sc.All() {
		in := sc.Within(q.Alarm)
		switch len(in) {
		case 0:
			writeError(w, http.StatusNotFound, fmt.Sprintf("alarm: no alarms under %q", q.Alarm))
			return
		case 1:
			q.Alarm = in[0]
		default:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("alarm: give one of the prefixes of your scope %v", in))
			return
		}
	}
	st, err := s.c.history.AlarmStats(r.Context(), q)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func alarmStatsQuery(r *http.Request) (historian.AlarmStatsQuery, error) {
	var q historian.AlarmStatsQuery
	var err error
	if q.Alarm, err = pathParam(r, "alarm"); err != nil {
		return q, err
	}
	q.Class = r.URL.Query().Get("class")
	if q.From, q.To, err = timeRange(r); err != nil {
		return q, err
	}
	if !q.From.Before(q.To) {
		return q, fmt.Errorf("from: %s is not before to", q.From.Format(time.RFC3339))
	}
	for _, d := range []struct {
		name          string
		into          *time.Duration
		def, min, max time.Duration
	}{
		{"window", &q.Window, 10 * time.Minute, time.Minute, 24 * time.Hour},
		{"chatter_within", &q.ChatterWithin, time.Minute, time.Second, time.Hour},
		{"stale", &q.Stale, 24 * time.Hour, time.Minute, 30 * 24 * time.Hour},
	} {
		*d.into = d.def
		if v := r.URL.Query().Get(d.name); v != "" {
			if *d.into, err = time.ParseDuration(v); err != nil || *d.into < d.min || *d.into > d.max {
				return q, fmt.Errorf("%s: %q is not a duration from %s to %s", d.name, v, d.min, d.max)
			}
		}
	}
	for _, n := range []struct {
		name          string
		into          *int
		def, min, max int
	}{
		{"flood", &q.Flood, 10, 1, 100000},
		{"chatter", &q.ChatterCount, 3, 2, 1000},
		{"top", &q.Top, 10, 1, 100},
	} {
		*n.into = n.def
		if v := r.URL.Query().Get(n.name); v != "" {
			if *n.into, err = strconv.Atoi(v); err != nil || *n.into < n.min || *n.into > n.max {
				return q, fmt.Errorf("%s: %q is not a whole number from %d to %d", n.name, v, n.min, n.max)
			}
		}
	}
	return q, nil
}

// ackAlarm acknowledges an alarm: {"path": ..., "comment": ...}.
func (s *Server) ackAlarm(w http.ResponseWriter, r *http.Request) {
	sess, _ := r.Context().Value(ctxKey{}).(session)
	var req struct {
		Path    string `json:"path"`
		Comment string `json:"comment"`
	}
	if err := decodeBody(r, &req, `{"path": "<device>/_alarms/<name>", "comment": "..."}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Comment) > 1000 {
		writeError(w, http.StatusBadRequest, "comment: at most 1000 characters")
		return
	}
	if !sess.scope.Covers(req.Path) {
		s.alarmAction(w, transform.Transition{}, fmt.Errorf("%w: %s", transform.ErrNoAlarm, req.Path))
		return
	}
	tr, err := s.c.alarms.AckAlarm(r.Context(), req.Path, sess.user, req.Comment)
	s.alarmAction(w, tr, err)
}

// maxShelve bounds how long an alarm may be shelved.
const maxShelve = 7 * 24 * time.Hour

// shelveAlarm shelves an alarm: {"path", "minutes", "comment"}; 0 minutes
// unshelves it.
func (s *Server) shelveAlarm(w http.ResponseWriter, r *http.Request) {
	sess, _ := r.Context().Value(ctxKey{}).(session)
	var req struct {
		Path    string   `json:"path"`
		Minutes *float64 `json:"minutes"`
		Comment string   `json:"comment"`
	}
	if err := decodeBody(r, &req, `{"path": "<device>/_alarms/<name>", "minutes": 60, "comment": "..."}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Minutes == nil || *req.Minutes < 0 || math.IsNaN(*req.Minutes) || time.Duration(*req.Minutes*float64(time.Minute)) > maxShelve {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("minutes: required, from 0 (unshelve) to %d (%s)", int(maxShelve.Minutes()), maxShelve))
		return
	}
	if req.Comment == "" && *req.Minutes > 0 {
		writeError(w, http.StatusBadRequest, "comment: say why the alarm is shelved")
		return
	}
	if !sess.scope.Covers(req.Path) {
		s.alarmAction(w, transform.Transition{}, fmt.Errorf("%w: %s", transform.ErrNoAlarm, req.Path))
		return
	}
	until := time.Now().Add(time.Duration(*req.Minutes * float64(time.Minute)))
	tr, err := s.c.alarms.ShelveAlarm(r.Context(), req.Path, until, sess.user, req.Comment)
	s.alarmAction(w, tr, err)
}

func (s *Server) alarmAction(w http.ResponseWriter, tr transform.Transition, err error) {
	switch {
	case statusOf(err) == http.StatusNotFound:
		writeError(w, http.StatusNotFound, "path: "+err.Error())
	case statusOf(err) == http.StatusServiceUnavailable:
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case err != nil && tr.Alarm == "":
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		writeError(w, http.StatusInternalServerError, err.Error())
	default:
		writeJSON(w, http.StatusOK, tr)
	}
}

// cycles lists finished production cycles: ?machine= (a UNS prefix),
// ?name=, ?from=, ?to= (of their end, default the last day), ?limit=
// (default 1000, the newest).
func (s *Server) cycles(w http.ResponseWriter, r *http.Request) {
	machine, err := pathParam(r, "machine")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	name := r.URL.Query().Get("name")
	if name != "" {
		if err := uns.ValidateSegment(name); err != nil {
			writeError(w, http.StatusBadRequest, "name: "+err.Error())
			return
		}
	}
	n, err := limitParam(r, 1000)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	from, to, err := timeRange(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	cs, err := acrossScope(r, machine, n, func(c transform.Cycle) time.Time { return c.End }, func(pre string) ([]transform.Cycle, error) {
		return s.c.history.Cycles(r.Context(), historian.CycleQuery{Machine: pre, Name: name, From: from, To: to, Limit: n})
	})
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	type cycleJSON struct {
		transform.Cycle
		DurationS float64 `json:"duration_s"`
	}
	out := make([]cycleJSON, len(cs))
	for i, c := range cs {
		out[i] = cycleJSON{c, c.Duration().Seconds()}
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(out), "cycles": out})
}

// emissionsReport is the day's exceedances of the alarms of a class
// (?class=, default emission) for ?day=YYYY-MM-DD (UTC, default today):
// every period from a raise to its clear that overlaps the day, with its
// duration within the day and the highest value it reached.
func (s *Server) emissionsReport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	class := q.Get("class")
	if class == "" {
		class = "emission"
	}
	day := time.Now().UTC().Truncate(24 * time.Hour)
	if d := q.Get("day"); d != "" {
		t, err := time.Parse(time.DateOnly, d)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("day: %q is not a date such as 2026-12-01", d))
			return
		}
		day = t
	}
	rep, err := s.c.history.Exceedances(r.Context(), class, day)
	if err != nil {
		s.log.Error("emissions report failed", "err", err)
		writeError(w, http.StatusInternalServerError, "report failed")
		return
	}
	if sc := scopeOf(r); !sc.All() {
		kept := rep.Exceedances[:0]
		for _, e := range rep.Exceedances {
			if sc.Covers(e.Alarm) {
				kept = append(kept, e)
			} else {
				delete(rep.Seconds, e.Alarm)
			}
		}
		rep.Exceedances = kept
	}
	writeJSON(w, http.StatusOK, rep)
}
