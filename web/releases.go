package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/release"
)

// Edge releases and their rollouts (docs/UPDATES.md).

// maxReleaseBytes bounds an uploaded build.
const maxReleaseBytes = 1 << 30

// uploadRelease takes a signed build: a multipart form whose first part,
// "manifest", is the manifest `calx release sign` wrote, and whose second,
// "binary", is the build.
func (s *Server) uploadRelease(w http.ResponseWriter, r *http.Request) {
	// A build of some ten megabytes over a thin link takes more than the
	// server's minute.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(30 * time.Minute))
	rc.SetWriteDeadline(time.Now().Add(31 * time.Minute))
	const shape = `multipart/form-data with the part "manifest" (the JSON calx release sign wrote) and then the part "binary"`
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		writeError(w, http.StatusBadRequest, "body: want "+shape)
		return
	}
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "body: want "+shape)
		return
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "manifest" {
		writeError(w, http.StatusBadRequest, "body: the first part must be \"manifest\": want "+shape)
		return
	}
	var m release.Manifest
	dec := json.NewDecoder(io.LimitReader(part, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("manifest: %v", err))
		return
	}
	if m.Size > maxReleaseBytes {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("manifest: a build of %d bytes: at most %d", m.Size, maxReleaseBytes))
		return
	}
	if part, err = mr.NextPart(); err != nil || part.FormName() != "binary" {
		writeError(w, http.StatusBadRequest, "body: the second part must be \"binary\": want "+shape)
		return
	}
	rel, err := s.c.updates.Upload(r.Context(), m, part, user(r))
	target := m.Version + " " + m.Platform()
	if err != nil {
		s.auditAction(r, "release upload", target, "refused: "+err.Error())
		updateError(w, err)
		return
	}
	s.auditAction(r, "release upload", target, fmt.Sprintf("ok: %d bytes, sha256 %s, key %s", m.Size, m.SHA256, m.KeyID))
	writeJSON(w, http.StatusCreated, rel)
}

func updateError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, cloud.ErrBadRelease), errors.Is(err, cloud.ErrNoSuchEdges):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, cloud.ErrNoRelease), errors.Is(err, cloud.ErrNoRollout):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, cloud.ErrReleaseExists), errors.Is(err, cloud.ErrUpdatesOff):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "updates: "+err.Error())
	}
}

func (s *Server) listReleases(w http.ResponseWriter, r *http.Request) {
	rels, err := s.c.updates.Releases(r.Context())
	if err != nil {
		updateError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(rels), "releases": rels})
}

func (s *Server) getRelease(w http.ResponseWriter, r *http.Request) {
	rel, err := s.c.updates.Release(r.Context(), chi.URLParam(r, "version"))
	if err != nil {
		updateError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rel)
}

func (s *Server) startUpdateRollout(w http.ResponseWriter, r *http.Request) {
	var req cloud.UpdateRolloutRequest
	if err := decodeBody(r, &req, `{"version": "1.4.2", "all": true | "edge": "group/edge_id" | "site": "..." | "template": "...", "canary": ["group/edge_id"] | "canary_count": N, "healthy_for": "10m", "timeout": "30m"}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ro, err := s.c.updates.StartRollout(r.Context(), req, user(r))
	if err != nil {
		s.auditAction(r, "update rollout", "release "+req.Version, "refused: "+err.Error())
		updateError(w, err)
		return
	}
	s.auditAction(r, "update rollout", "release "+req.Version, fmt.Sprintf("ok: %s, %s", ro.ID, ro.Selection))
	writeJSON(w, http.StatusCreated, s.rolloutJSON(ro))
}

func (s *Server) listUpdateRollouts(w http.ResponseWriter, r *http.Request) {
	ros, err := s.c.updates.Rollouts(r.Context())
	if err != nil {
		updateError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(ros), "rollouts": ros})
}

// updateRollout is a rollout with each of its edges' progress, counted by
// state.
func (s *Server) updateRollout(w http.ResponseWriter, r *http.Request) {
	ro, err := s.c.updates.Rollout(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		updateError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.rolloutJSON(ro))
}

func (s *Server) rolloutJSON(ro *cloud.UpdateRollout) map[string]any {
	edges := s.c.updates.Progress(ro, time.Now())
	counts := map[string]int{}
	for _, e := range edges {
		counts[e.State]++
	}
	return map[string]any{"rollout": ro, "edges": edges, "counts": counts}
}

// sinks lists the far ends that get every value besides the historian
// (docs/INTEGRATIONS.md), each with its counters and backlog.
func (s *Server) sinks(w http.ResponseWriter, r *http.Request) {
	list := s.c.sinks(r.Context())
	writeJSON(w, http.StatusOK, map[string]any{"count": len(list), "sinks": list})
}
