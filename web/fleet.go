package web

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/fleet"
	"github.com/calx-iiot/calx/store"
)

// The fleet config API: versions of the whole config (YAML), their diffs,
// rollbacks, rollouts to edges, and each edge's desired and applied version.

func fleetError(w http.ResponseWriter, err error) {
	writeError(w, statusOf(err), err.Error())
}

func user(r *http.Request) string {
	sess, _ := r.Context().Value(ctxKey{}).(session)
	return sess.user
}

// versionParam reads an optional version number; 0 means the newest.
func (s *Server) versionParam(r *http.Request, name string) (uint64, error) {
	q := r.URL.Query().Get(name)
	if q == "" {
		return s.c.fleet.Head(r.Context())
	}
	v, err := strconv.ParseUint(q, 10, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%s %q: want a version number", name, q)
	}
	return v, nil
}

// getConfig returns a version (default the newest) with its YAML; with
// Accept: application/yaml (or ?format=yaml), the YAML alone.
func (s *Server) getConfig(w http.ResponseWriter, r *http.Request) {
	v, err := s.versionParam(r, "version")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if v == 0 {
		writeError(w, http.StatusNotFound, "no config stored yet: PUT /api/v1/config")
		return
	}
	ver, err := s.c.fleet.GetRedacted(r.Context(), v)
	if err != nil {
		fleetError(w, err)
		return
	}
	if r.URL.Query().Get("format") == "yaml" || r.Header.Get("Accept") == "application/yaml" {
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("X-Calx-Config-Version", strconv.FormatUint(ver.Version, 10))
		_, _ = io.WriteString(w, ver.YAML)
		return
	}
	writeJSON(w, http.StatusOK, ver)
}

// putConfig stores a new version: the body is the whole config as YAML,
// ?message= says why.
func (s *Server) putConfig(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	msg := r.URL.Query().Get("message")
	ver, err := s.c.fleet.Save(r.Context(), raw, user(r), msg)
	if err != nil {
		s.auditAction(r, "config-save", "", "refused: "+err.Error())
		fleetError(w, err)
		return
	}
	s.auditAction(r, "config-save", fmt.Sprintf("version %d", ver.Version), "ok: "+msg)
	ver.YAML = ""
	writeJSON(w, http.StatusCreated, ver)
}

// configProblem is one thing wrong with a config, at its line when known.
type configProblem struct {
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

// atLine finds the line a parse error names ("config:12: key: ...").
var atLine = regexp.MustCompile(`config:(\d+): ?`)

// validateConfig checks a config as PUT would and stores nothing, for
// an editor that shows the problems as one types: {"valid", "errors":
// [{"line", "message"}]}.
func (s *Server) validateConfig(w http.ResponseWriter, r *http.Request) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "body: "+err.Error())
		return
	}
	_, err = s.c.fleet.Check(r.Context(), raw)
	if err == nil {
		writeJSON(w, http.StatusOK, map[string]any{"valid": true, "errors": []configProblem{}})
		return
	}
	if !errors.Is(err, cloud.ErrBadConfig) {
		fleetError(w, err)
		return
	}
	msg := strings.TrimPrefix(err.Error(), cloud.ErrBadConfig.Error()+": ")
	var problems []configProblem
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l == "" || l == "config:" {
			continue
		}
		p := configProblem{Message: l}
		if m := atLine.FindStringSubmatchIndex(l); m != nil {
			p.Line, _ = strconv.Atoi(l[m[2]:m[3]])
			p.Message = l[:m[0]] + l[m[1]:]
		}
		problems = append(problems, p)
	}
	writeJSON(w, http.StatusOK, map[string]any{"valid": false, "errors": problems})
}

func (s *Server) configVersions(w http.ResponseWriter, r *http.Request) {
	vs, err := s.c.fleet.Versions(r.Context())
	if err != nil {
		fleetError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(vs), "versions": vs})
}

func (s *Server) configDiff(w http.ResponseWriter, r *http.Request) {
	from, err := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "from: want a version number")
		return
	}
	to, err := s.versionParam(r, "to")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	d, err := s.c.fleet.Diff(r.Context(), from, to)
	if err != nil {
		fleetError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"from": from, "to": to, "diff": d})
}

func (s *Server) configRollback(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Version uint64 `json:"version"`
	}
	if err := decodeBody(r, &req, `{"version": N}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ver, err := s.c.fleet.Rollback(r.Context(), req.Version, user(r))
	if err != nil {
		s.auditAction(r, "config-rollback", fmt.Sprintf("version %d", req.Version), "refused: "+err.Error())
		fleetError(w, err)
		return
	}
	s.auditAction(r, "config-rollback", fmt.Sprintf("version %d", ver.Version), fmt.Sprintf("ok: to version %d", req.Version))
	ver.YAML = ""
	writeJSON(w, http.StatusCreated, ver)
}

// rollout moves edges to a version: {"version", and one of "all": true,
// "edge": "group/edge_id", "site", "template"}.
func (s *Server) rollout(w http.ResponseWriter, r *http.Request) {
	var req cloud.Rollout
	if err := decodeBody(r, &req, `{"version": N, "all": true | "edge": "group/edge_id" | "site": "..." | "template": "..."}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if visible := s.edgesInScope(r); visible != nil {
		// A user with a scope rolls out to one edge of it at a time.
		if req.Edge == "" || req.All || req.Site != "" || req.Template != "" {
			writeError(w, http.StatusForbidden, "a user with a scope rolls out edge by edge: {\"version\": N, \"edge\": \"group/edge_id\"}")
			return
		}
		if !visible[req.Edge] {
			writeError(w, http.StatusNotFound, fmt.Sprintf("edge: no edge %s", req.Edge))
			return
		}
	}
	id, edges, err := s.c.fleet.Roll(r.Context(), req)
	if err != nil {
		s.auditAction(r, "rollout", fmt.Sprintf("version %d", req.Version), "refused: "+err.Error())
		fleetError(w, err)
		return
	}
	s.auditAction(r, "rollout", fmt.Sprintf("version %d", req.Version), fmt.Sprintf("ok: %s to %d edges", id, len(edges)))
	writeJSON(w, http.StatusCreated, map[string]any{"rollout": id, "version": req.Version, "edges": edges})
}

// rolloutProgress shows the edges of a rollout and how far each is.
func (s *Server) rolloutProgress(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	states, err := s.c.fleet.States(r.Context())
	if err != nil {
		fleetError(w, err)
		return
	}
	var mine []cloud.EdgeConfigState
	counts := map[string]int{}
	for _, st := range s.visibleStates(r, states) {
		if st.Rollout == id {
			mine = append(mine, st)
			counts[st.State]++
		}
	}
	if len(mine) == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no rollout %q (or a later one replaced it on every edge)", id))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"rollout": id, "total": len(mine), "by_state": counts, "edges": mine})
}

func (s *Server) configEdges(w http.ResponseWriter, r *http.Request) {
	states, err := s.c.fleet.States(r.Context())
	if err != nil {
		fleetError(w, err)
		return
	}
	states = s.visibleStates(r, states)
	writeJSON(w, http.StatusOK, map[string]any{"count": len(states), "edges": states})
}

// noConfigYet answers an empty list (named list) when no config is stored
// yet: a fleet without one has no templates, instances or sites.
func (s *Server) noConfigYet(w http.ResponseWriter, r *http.Request, list string) bool {
	v, err := s.c.fleet.Head(r.Context())
	if err != nil || v > 0 {
		return false // headConfig answers the error, or reads the config
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": 0, list: []any{}})
	return true
}

// headConfig returns the newest config, parsed, or answers 404.
func (s *Server) headConfig(w http.ResponseWriter, r *http.Request) (*fleet.Config, bool) {
	v, err := s.c.fleet.Head(r.Context())
	if err != nil {
		fleetError(w, err)
		return nil, false
	}
	if v == 0 {
		writeError(w, http.StatusNotFound, "no config stored yet: PUT /api/v1/config")
		return nil, false
	}
	ver, err := s.c.fleet.GetRedacted(r.Context(), v)
	if err != nil {
		fleetError(w, err)
		return nil, false
	}
	c, err := fleet.Parse("config", []byte(ver.YAML))
	if err != nil {
		fleetError(w, err)
		return nil, false
	}
	return c, true
}

func (s *Server) templates(w http.ResponseWriter, r *http.Request) {
	if s.noConfigYet(w, r, "templates") {
		return
	}
	if c, ok := s.headConfig(w, r); ok {
		writeJSON(w, http.StatusOK, map[string]any{"count": len(c.Templates), "templates": c.Templates})
	}
}

// instances lists every device of every edge, with its template,
// parameters and overrides.
func (s *Server) instances(w http.ResponseWriter, r *http.Request) {
	if s.noConfigYet(w, r, "instances") {
		return
	}
	c, ok := s.headConfig(w, r)
	if !ok {
		return
	}
	type inst struct {
		Edge string `json:"edge"`
		Site string `json:"site,omitempty"`
		fleet.Instance
	}
	var out []inst
	visible := s.edgesInScope(r)
	for _, e := range c.Edges {
		if visible != nil && !visible[e.Key()] {
			continue
		}
		for _, d := range e.Devices {
			out = append(out, inst{Edge: e.Key(), Site: e.Site, Instance: d})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(out), "instances": out})
}

// sites lists the sites of the newest config with their edges, and each
// edge's config state.
func (s *Server) sites(w http.ResponseWriter, r *http.Request) {
	if s.noConfigYet(w, r, "sites") {
		return
	}
	c, ok := s.headConfig(w, r)
	if !ok {
		return
	}
	states, err := s.c.fleet.States(r.Context())
	if err != nil {
		fleetError(w, err)
		return
	}
	byEdge := map[string]cloud.EdgeConfigState{}
	for _, st := range states {
		byEdge[st.Edge] = st
	}
	type site struct {
		Name  string                  `json:"name"`
		Edges []cloud.EdgeConfigState `json:"edges"`
	}
	var out []*site
	idx := map[string]*site{}
	visible := s.edgesInScope(r)
	for _, e := range c.Edges {
		if visible != nil && !visible[e.Key()] {
			continue
		}
		st := idx[e.Site]
		if st == nil {
			st = &site{Name: e.Site}
			idx[e.Site] = st
			out = append(out, st)
		}
		st.Edges = append(st.Edges, byEdge[e.Key()])
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(out), "sites": out})
}

// visibleStates keeps the config states of the edges in the request's
// scope.
func (s *Server) visibleStates(r *http.Request, states []cloud.EdgeConfigState) []cloud.EdgeConfigState {
	visible := s.edgesInScope(r)
	if visible == nil {
		return states
	}
	out := []cloud.EdgeConfigState{}
	for _, st := range states {
		if visible[st.Edge] {
			out = append(out, st)
		}
	}
	return out
}

// clusterNodes lists the cloud's nodes as this one sees them: each one's
// name, whether it is up, whether it leads the backbone's metadata, and
// how far behind it is; and the copies kept of each stream and bucket.
// A cloud without a cluster is a node alone. Each node lists the jobs
// that run once in the cluster and that it runs now (primary-host,
// transforms), and what it says of itself every 2 s: its version, its
// broker's address, when it started; jobs maps each job to its node.
func (s *Server) clusterNodes(w http.ResponseWriter, r *http.Request) {
	type node struct {
		store.NodeInfo
		Jobs []string `json:"jobs"`
		// What the node said of itself in the last seconds (absent when
		// it did not).
		Version string     `json:"version,omitempty"`
		MQTT    string     `json:"mqtt,omitempty"`
		Started *time.Time `json:"started,omitempty"`
	}
	jobs, err := s.c.jobs.Jobs(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "jobs: "+err.Error())
		return
	}
	details, err := s.c.jobs.NodeDetails(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	var nodes []node
	self := ""
	for _, n := range s.c.cluster.Nodes() {
		if n.Self {
			self = n.Name
		}
		held := []string{}
		for job, holder := range jobs {
			if holder == n.Name {
				held = append(held, job)
			}
		}
		slices.Sort(held)
		nd := node{NodeInfo: n, Jobs: held}
		if d, ok := details[n.Name]; ok {
			nd.Version, nd.MQTT, nd.Started = d.Version, d.MQTT, &d.Started
		}
		nodes = append(nodes, nd)
	}
	writeJSON(w, http.StatusOK, map[string]any{"node": self, "replicas": s.c.cluster.Replicas(), "count": len(nodes), "nodes": nodes, "jobs": jobs})
}
