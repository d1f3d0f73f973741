package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

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
	if err := s.c.audit.Audit(context.WithoutCancel(r.Context()), e); err != nil {
		s.log.Error("audit entry not stored", "err", err)
	}
}

func accountError(w http.ResponseWriter, err error) {
	if st := statusOf(err); st != http.StatusInternalServerError {
		writeError(w, st, err.Error())
		return
	}
	writeError(w, http.StatusInternalServerError, "account not changed")
}

// mqttUsers lists the MQTT accounts, with their sessions.
func (s *Server) mqttUsers(w http.ResponseWriter, r *http.Request) {
	accounts := s.c.accounts.MQTTAccounts()
	writeJSON(w, http.StatusOK, map[string]any{"count": len(accounts), "accounts": accounts})
}

// disableMQTTUser disables (or enables) an account; disabling ends its
// sessions.
func (s *Server) disableMQTTUser(disable bool) http.HandlerFunc {
	action := "enable-mqtt-user"
	if disable {
		action = "disable-mqtt-user"
	}
	return func(w http.ResponseWriter, r *http.Request) {
		name := chi.URLParam(r, "username")
		if err := s.c.accounts.SetMQTTUserDisabled(r.Context(), name, disable); err != nil {
			s.auditAction(r, action, name, "refused: "+err.Error())
			accountError(w, err)
			return
		}
		s.auditAction(r, action, name, "ok")
		writeJSON(w, http.StatusOK, map[string]any{"username": name, "disabled": disable})
	}
}

// rotateMQTTPassword gives an account a new password, shown once.
func (s *Server) rotateMQTTPassword(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "username")
	pw, err := s.c.accounts.RotateMQTTPassword(r.Context(), name)
	if err != nil {
		s.auditAction(r, "rotate-mqtt-password", name, "refused: "+err.Error())
		accountError(w, err)
		return
	}
	s.auditAction(r, "rotate-mqtt-password", name, "ok")
	writeJSON(w, http.StatusOK, map[string]any{"username": name, "password": pw,
		"note": "the password is shown only now; it is stored hashed, and the old one no longer works"})
}

// deleteMQTTUser deletes an account made through the API.
func (s *Server) deleteMQTTUser(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "username")
	if err := s.c.accounts.DeleteMQTTUser(r.Context(), name); err != nil {
		s.auditAction(r, "delete-mqtt-user", name, "refused: "+err.Error())
		accountError(w, err)
		return
	}
	s.auditAction(r, "delete-mqtt-user", name, "ok")
	writeJSON(w, http.StatusOK, map[string]any{"username": name, "deleted": true})
}

// revokeEdge takes an edge node off the cloud: its accounts and its births.
func (s *Server) revokeEdge(w http.ResponseWriter, r *http.Request) {
	group, edge := chi.URLParam(r, "group"), chi.URLParam(r, "edge")
	names, err := s.c.accounts.RevokeEdge(r.Context(), group, edge)
	if err != nil {
		s.auditAction(r, "revoke-edge", group+"/"+edge, "refused: "+err.Error())
		accountError(w, err)
		return
	}
	s.auditAction(r, "revoke-edge", group+"/"+edge, "ok: accounts "+strings.Join(names, ", "))
	writeJSON(w, http.StatusOK, map[string]any{"group": group, "edge_node": edge, "accounts": names})
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
	user, pw, err := s.c.accounts.ProvisionEdge(r.Context(), req.Group, req.Edge)
	if err != nil {
		s.auditAction(r, "provision-edge", req.Group+"/"+req.Edge, "refused: "+err.Error())
		accountError(w, err)
		return
	}
	s.auditAction(r, "provision-edge", req.Group+"/"+req.Edge, "ok: username "+user)
	writeJSON(w, http.StatusCreated, map[string]any{
		"group": req.Group, "edge_node": req.Edge, "username": user, "password": pw,
		"broker": s.c.accounts.BrokerAddr(),
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
	if err := s.c.accounts.AddMQTTUser(r.Context(), u); err != nil {
		s.auditAction(r, "add-mqtt-user", req.Username, "refused: "+err.Error())
		accountError(w, err)
		return
	}
	s.auditAction(r, "add-mqtt-user", req.Username, "ok")
	writeJSON(w, http.StatusCreated, map[string]any{"username": u.Username, "publish": u.Publish, "subscribe": u.Subscribe})
}
