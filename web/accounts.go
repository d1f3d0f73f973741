package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/store/historian"
)

// decodeBody decodes a JSON request body strictly into v.
func decodeBody(r *http.Request, v any, shape string) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: want JSON %s: %v", shape, err)
	}
	return nil
}

func (s *Server) auditAction(r *http.Request, action, target, result string) {
	sess, _ := r.Context().Value(ctxKey{}).(session)
	e := historian.AuditEntry{TS: time.Now(), User: sess.user, Action: action, Path: target, Value: "", Result: result}
	if err := s.cloud.Historian.Audit(context.WithoutCancel(r.Context()), e); err != nil {
		s.log.Error("audit entry not stored", "err", err)
	}
}

func accountError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, cloud.ErrBadAccount):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, cloud.ErrUserExists):
		writeError(w, http.StatusConflict, err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "account not created")
	}
}

// provisionEdge creates an edge node identity and shows its password once.
func (s *Server) provisionEdge(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Group string `json:"group"`
		Edge  string `json:"edge_node"`
	}
	if err := decodeBody(r, &req, `{"group": "...", "edge_node": "..."}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	user, pw, err := s.cloud.ProvisionEdge(r.Context(), req.Group, req.Edge)
	if err != nil {
		s.auditAction(r, "provision-edge", req.Group+"/"+req.Edge, "refused: "+err.Error())
		accountError(w, err)
		return
	}
	s.auditAction(r, "provision-edge", req.Group+"/"+req.Edge, "ok: username "+user)
	writeJSON(w, http.StatusCreated, map[string]any{
		"group": req.Group, "edge_node": req.Edge, "username": user, "password": pw,
		"broker": s.cloud.Broker.Addr(),
		"note":   "the password is shown only now; it is stored hashed",
	})
}

// addMQTTUser creates an MQTT account limited to topic filters.
func (s *Server) addMQTTUser(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Username  string   `json:"username"`
		Password  string   `json:"password"`
		Publish   []string `json:"publish"`
		Subscribe []string `json:"subscribe"`
	}
	if err := decodeBody(r, &req, `{"username": "...", "password": "...", "publish": [filters], "subscribe": [filters]}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(req.Password) < 12 {
		writeError(w, http.StatusBadRequest, "password: at least 12 characters")
		return
	}
	hash, err := cloud.HashPassword(req.Password)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "account not created")
		return
	}
	u := cloud.MQTTUser{Username: req.Username, PasswordHash: hash, Role: cloud.RoleCustom, Publish: req.Publish, Subscribe: req.Subscribe}
	if err := s.cloud.AddMQTTUser(r.Context(), u); err != nil {
		s.auditAction(r, "add-mqtt-user", req.Username, "refused: "+err.Error())
		accountError(w, err)
		return
	}
	s.auditAction(r, "add-mqtt-user", req.Username, "ok")
	writeJSON(w, http.StatusCreated, map[string]any{"username": u.Username, "publish": u.Publish, "subscribe": u.Subscribe})
}
