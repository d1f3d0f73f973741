package web

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/uns"
)

// Limits of the raw history API.
const (
	maxHistoryPoints = 100000
	maxHistoryRange  = 366 * 24 * time.Hour
)

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := decodeBody(r, &req, `{"username": "...", "password": "..."}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Username == "" || req.Password == "" {
		writeError(w, http.StatusBadRequest, "username and password are required")
		return
	}
	client := r.RemoteAddr
	if host, _, err := net.SplitHostPort(client); err == nil {
		client = host
	}
	if wait := s.auth.Blocked(client, req.Username); wait > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many failed logins from %s: try again in %s", client, wait.Round(time.Second)))
		return
	}
	tok, exp, err := s.auth.Login(req.Username, req.Password)
	if err != nil {
		s.auth.recordFailure(client, req.Username)
		logged := req.Username
		if !s.auth.Known(logged) {
			logged = "(unknown)"
		}
		s.log.Warn("login refused", "username", logged, "remote", r.RemoteAddr)
		writeError(w, http.StatusUnauthorized, err.Error())
		return
	}
	s.auth.forgive(client, req.Username)
	s.setSessionCookie(w, r, tok, exp)
	writeJSON(w, http.StatusOK, map[string]any{"token": tok, "expires_at": exp.UTC().Format(time.RFC3339)})
}

// setSessionCookie gives the browser its session.
func (s *Server) setSessionCookie(w http.ResponseWriter, r *http.Request, tok string, exp time.Time) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: tok, Path: "/", Expires: exp,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || s.opts.BehindTLSProxy})
}

// logout ends this sign-in, or with ?everywhere=true every sign-in of the
// user (other browsers, other machines).
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("everywhere") == "true" {
		s.auth.logoutEverywhere(token(r))
	} else {
		s.auth.Logout(token(r))
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]string{"status": "logged out"})
}

// tagJSON is a tag of the namespace API.
type tagJSON struct {
	Path        uns.Path          `json:"path"`
	Sparkplug   uns.SparkplugAddr `json:"sparkplug"`
	DataType    uns.DataType      `json:"datatype"`
	Unit        string            `json:"unit"`
	Description string            `json:"description,omitempty"`
	Writable    bool              `json:"writable"`
	Value       any               `json:"value"`
	TS          *time.Time        `json:"ts"`
	Quality     uns.Quality       `json:"quality"`
	Reason      string            `json:"reason,omitempty"` // why a calculated tag is bad
}

func toTagJSON(t cloud.TagState) tagJSON {
	j := tagJSON{Path: t.Path, Sparkplug: t.Sparkplug, DataType: t.DataType, Unit: t.Unit,
		Description: t.Description, Writable: t.Writable, Quality: t.Quality, Reason: t.Reason}
	if t.HasVal {
		j.Value = t.Value.Typed(t.DataType)
		ts := t.TS.UTC()
		j.TS = &ts
	}
	return j
}

// listPrefix returns the tags under the request's prefix parameter, or
// answers 400 for a bad one.
func (s *Server) listPrefix(w http.ResponseWriter, r *http.Request) (string, []cloud.TagState, bool) {
	prefix := r.URL.Query().Get("prefix")
	if prefix != "" {
		if err := uns.Path(prefix).Validate(); err != nil {
			writeError(w, http.StatusBadRequest, "prefix: "+err.Error())
			return "", nil, false
		}
	}
	var tags []cloud.TagState
	for _, p := range scopeOf(r).Within(prefix) {
		tags = append(tags, s.c.tags.List(p)...)
	}
	return prefix, tags, true
}

func (s *Server) namespace(w http.ResponseWriter, r *http.Request) {
	_, tags, ok := s.listPrefix(w, r)
	if !ok {
		return
	}
	out := make([]tagJSON, 0, len(tags))
	for _, t := range tags {
		out = append(out, toTagJSON(t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(out), "tags": out})
}

type pointJSON struct {
	TS      time.Time   `json:"ts"`
	Value   any         `json:"value"`
	Quality uns.Quality `json:"quality"`
}

// parseTime reads an RFC 3339 time parameter, or returns def when absent.
func parseTime(q string, name string, def time.Time) (time.Time, error) {
	if q == "" {
		return def, nil
	}
	t, err := time.Parse(time.RFC3339Nano, q)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", name, q)
	}
	return t, nil
}

// sessionRecheck is how often a live stream checks that its session
// still holds.
const sessionRecheck = 2 * time.Second

// live streams new values as Server-Sent Events, one "values" event per
// batch, and alarm transitions as "alarms" events; ?prefix= (repeatable)
// narrows both to those UNS prefixes, ?values=false leaves the values out.
func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming not supported")
		return
	}
	prefixes := r.URL.Query()["prefix"]
	values := true
	switch v := r.URL.Query().Get("values"); v {
	case "", "true":
	case "false":
		values = false // alarm events alone
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("values: %q: true or false", v))
		return
	}
	if len(prefixes) > 1000 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("prefix: %d prefixes, at most 1000", len(prefixes)))
		return
	}
	for _, p := range prefixes {
		if err := uns.Path(p).Validate(); err != nil {
			writeError(w, http.StatusBadRequest, "prefix: "+err.Error())
			return
		}
	}
	if sc := scopeOf(r); !sc.All() {
		if len(prefixes) == 0 {
			prefixes = []string{""}
		}
		var in []string
		for _, p := range prefixes {
			in = append(in, sc.Within(p)...)
		}
		if len(in) == 0 {
			writeError(w, http.StatusNotFound, "prefix: no tags there")
			return
		}
		prefixes = in
	}
	sub := s.c.live.Subscribe(prefixes...)
	defer s.c.live.Unsubscribe(sub)
	// The stream outlives the server's write timeout: each write gets a
	// deadline of its own, so that a client that stops reading is cut off.
	rc := http.NewResponseController(w)
	flush := func() {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		fl.Flush()
	}
	_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 2000\n\n")
	fl.Flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	// A session that ends (sign-out, the user removed or changed) ends
	// its streams within a few seconds.
	recheck := time.NewTicker(sessionRecheck)
	defer recheck.Stop()
	tok := token(r)
	types := map[uns.Path]uns.DataType{}
	typeOf := func(p uns.Path) uns.DataType {
		dt, ok := types[p]
		if !ok {
			if t, found := s.c.tags.Get(p); found {
				dt = t.DataType
				types[p] = dt
			}
		}
		return dt
	}
	var buf []byte
	for {
		select {
		case <-r.Context().Done():
			return
		case <-ping.C:
			fmt.Fprint(w, ": ping\n\n")
			flush()
		case <-recheck.C:
			if _, ok := s.auth.check(tok); !ok {
				fmt.Fprint(w, "event: signed-out\ndata: {}\n\n")
				flush()
				return
			}
		case batch := <-sub.C:
			if !values {
				continue
			}
			buf = append(buf[:0], "event: values\ndata: "...)
			buf = uns.AppendSamplesJSON(buf, batch, typeOf)
			buf = append(buf, "\n\n"...)
			_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			w.Write(buf)
			flush()
		case trs := <-sub.Alarms:
			b, _ := json.Marshal(trs)
			_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
			fmt.Fprintf(w, "event: alarms\ndata: %s\n\n", b)
			flush()
		}
	}
}

// edgeJSON is an edge's health with its config state.
type edgeJSON struct {
	cloud.EdgeHealth
	Config *cloud.EdgeConfigState `json:"config,omitempty"`
	Alarms []cloud.FleetAlarm     `json:"alarms"`
}

func (s *Server) edgeList(r *http.Request) []edgeJSON {
	states, err := s.c.fleet.States(r.Context())
	if err != nil {
		s.log.Warn("config states not read", "err", err)
	}
	byKey := map[string]*cloud.EdgeConfigState{}
	for i := range states {
		byKey[states[i].Edge] = &states[i]
	}
	active, _ := s.c.health.Alarms()
	out := []edgeJSON{}
	visible := s.edgesInScope(r)
	for _, h := range s.c.health.Edges(time.Now()) {
		if visible != nil && !visible[h.ID] {
			continue
		}
		e := edgeJSON{EdgeHealth: h, Config: byKey[h.ID], Alarms: []cloud.FleetAlarm{}}
		for _, a := range active {
			if a.Edge == h.ID {
				e.Alarms = append(e.Alarms, a)
			}
		}
		out = append(out, e)
	}
	return out
}

// edgesInScope is the set of edges ("group/edge") with a tag in the
// request's scope; nil when the scope is everything.
func (s *Server) edgesInScope(r *http.Request) map[string]bool {
	sc := scopeOf(r)
	if sc.All() {
		return nil
	}
	out := map[string]bool{}
	for _, p := range sc.Within("") {
		for _, t := range s.c.tags.List(p) {
			out[t.Sparkplug.Group+"/"+t.Sparkplug.Edge] = true
		}
	}
	return out
}

// edges lists every edge with its health verdict; ?verdict= filters.
func (s *Server) edges(w http.ResponseWriter, r *http.Request) {
	verdict := r.URL.Query().Get("verdict")
	switch verdict {
	case "", cloud.HealthOK, cloud.HealthDegraded, cloud.HealthDown:
	default:
		writeError(w, http.StatusBadRequest, fmt.Sprintf("verdict %q: one of ok, degraded, down", verdict))
		return
	}
	out := []edgeJSON{}
	counts := map[string]int{cloud.HealthOK: 0, cloud.HealthDegraded: 0, cloud.HealthDown: 0}
	for _, e := range s.edgeList(r) {
		counts[e.Verdict]++
		if verdict == "" || e.Verdict == verdict {
			out = append(out, e)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(out), "verdicts": counts, "edges": out})
}

// edge is one edge, by group and edge id.
func (s *Server) edge(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "group") + "/" + chi.URLParam(r, "edge")
	for _, e := range s.edgeList(r) {
		if e.ID == id {
			writeJSON(w, http.StatusOK, e)
			return
		}
	}
	writeError(w, http.StatusNotFound, fmt.Sprintf("no edge %s: GET /api/v1/edges lists them", id))
}

// fleetAlarms lists the fleet's active alarms and its recent transitions.
func (s *Server) fleetAlarms(w http.ResponseWriter, r *http.Request) {
	active, journal := s.c.health.Alarms()
	edge, visible := r.URL.Query().Get("edge"), s.edgesInScope(r)
	if edge != "" || visible != nil {
		keep := func(as []cloud.FleetAlarm) []cloud.FleetAlarm {
			out := []cloud.FleetAlarm{}
			for _, a := range as {
				if (edge == "" || a.Edge == edge) && (visible == nil || visible[a.Edge]) {
					out = append(out, a)
				}
			}
			return out
		}
		active, journal = keep(active), keep(journal)
	}
	writeJSON(w, http.StatusOK, map[string]any{"active": active, "journal": journal})
}
