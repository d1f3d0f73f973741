package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/calx-iiot/calx/cloud"
)

// API tokens are for machines (Grafana, scripts, AI assistants): named,
// with a role, a scope and an expiry; the secret is shown once, at
// creation, and only its SHA-256 is kept (by the cloud, across restarts).
// A token is a session that outlives sign-outs until it expires or is
// revoked.

// Bounds of a token's life.
const (
	defaultTokenDays = 90
	maxTokenDays     = 366
)

// tokenInfo is a token as the API lists it: never its secret.
type tokenInfo struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	Scope     Scope      `json:"scope"`
	Created   time.Time  `json:"created"`
	Expires   time.Time  `json:"expires"`
	Expired   bool       `json:"expired"`
	CreatedBy string     `json:"created_by"`
	LastUsed  *time.Time `json:"last_used,omitempty"`
}

// loadTokens gives auth the tokens the cloud keeps.
func (s *Server) loadTokens(ctx context.Context) error {
	ts, err := s.c.tokens.APITokens(ctx)
	if err != nil {
		return err
	}
	for _, t := range ts {
		if err := s.auth.addToken(t); err != nil {
			s.log.Warn("stored API token not loaded", "id", t.ID, "err", err)
		}
	}
	uses, err := s.c.tokens.TokenUses(ctx)
	if err != nil {
		return err
	}
	for _, u := range uses {
		if !s.auth.usedToken(u) {
			// The use of a token revoked while it was being written.
			if err := s.c.tokens.DeleteAPIToken(ctx, u.ID); err != nil {
				s.log.Warn("use of a revoked token not deleted", "id", u.ID, "err", err)
			}
		}
	}
	return nil
}

// tokenUseEvery is how often the last use of tokens is written down.
const tokenUseEvery = time.Minute

// keepTokenUses writes down, now and then, when each token was last used,
// so that the list of tokens shows it after a restart.
func (s *Server) keepTokenUses() { s.every(tokenUseEvery, s.saveTokenUses) }

// every runs do every d, each within 10 s, until the server stops.
func (s *Server) every(d time.Duration, do func(ctx context.Context)) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			do(ctx)
			cancel()
		}
	}
}

func (s *Server) saveTokenUses(ctx context.Context) {
	for _, u := range s.auth.unsavedUses() {
		if err := s.c.tokens.PutTokenUse(ctx, u); err != nil {
			s.log.Warn("last use of an API token not kept", "id", u.ID, "err", err)
			continue
		}
		s.auth.savedUse(u)
	}
}

// usedToken takes the kept last use of a token; false when there is no
// such token.
func (a *Auth) usedToken(u cloud.TokenUse) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.sessions {
		if s.tokenID == u.ID {
			if u.Last.After(a.tokenUse[u.ID]) {
				a.tokenUse[u.ID] = u.Last
			}
			a.tokenSaved[u.ID] = u.Last
			return true
		}
	}
	return false
}

// unsavedUses are the last uses of tokens not written down yet.
func (a *Auth) unsavedUses() []cloud.TokenUse {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []cloud.TokenUse
	for id, t := range a.tokenUse {
		if t.After(a.tokenSaved[id]) {
			out = append(out, cloud.TokenUse{ID: id, Last: t})
		}
	}
	return out
}

func (a *Auth) savedUse(u cloud.TokenUse) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.tokenUse[u.ID]; ok { // not revoked meanwhile
		a.tokenSaved[u.ID] = u.Last
	}
}

// addToken makes t's hash a session.
func (a *Auth) addToken(t cloud.APIToken) error {
	raw, err := hex.DecodeString(t.SHA256)
	if err != nil || len(raw) != sha256.Size {
		return fmt.Errorf("token %s: not a SHA-256", t.ID)
	}
	if err := checkRoleScope("token "+t.Name, t.Role, t.Scope); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sessions[[32]byte(raw)] = session{user: "token:" + t.Name, role: t.Role, scope: t.Scope, expires: t.Expires, tokenID: t.ID}
	return nil
}

// revokeToken ends a token's session; false when there is none.
func (a *Auth) revokeToken(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, s := range a.sessions {
		if s.tokenID == id {
			delete(a.sessions, k)
			delete(a.tokenUse, id)
			delete(a.tokenSaved, id)
			return true
		}
	}
	return false
}

func (a *Auth) lastUse(id string) *time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.tokenUse[id]; ok {
		return &t
	}
	return nil
}

func (s *Server) tokens(w http.ResponseWriter, r *http.Request) {
	ts, err := s.c.tokens.APITokens(r.Context())
	if err != nil {
		s.log.Error("tokens not listed", "err", err)
		writeError(w, http.StatusInternalServerError, "tokens not listed")
		return
	}
	now := time.Now()
	out := make([]tokenInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, tokenInfo{ID: t.ID, Name: t.Name, Role: t.Role, Scope: append(Scope{}, t.Scope...), Created: t.Created,
			Expires: t.Expires, Expired: now.After(t.Expires), CreatedBy: t.CreatedBy, LastUsed: s.auth.lastUse(t.ID)})
	}
	slices.SortFunc(out, func(a, b tokenInfo) int { return a.Created.Compare(b.Created) })
	writeJSON(w, http.StatusOK, map[string]any{"count": len(out), "tokens": out})
}

// createToken: {"name", "role", "scope", "days"}; the answer carries the
// token, the only time it is shown.
func (s *Server) createToken(w http.ResponseWriter, r *http.Request) {
	s.identityMu.Lock()
	defer s.identityMu.Unlock()
	var req struct {
		Name  string `json:"name"`
		Role  string `json:"role"`
		Scope Scope  `json:"scope"`
		Days  *int   `json:"days"`
	}
	if err := decodeBody(r, &req, `{"name": "grafana", "role": "viewer", "scope": ["limeworks/ghent"], "days": 90}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	days := defaultTokenDays
	if req.Days != nil {
		days = *req.Days
	}
	if days < 1 || days > maxTokenDays {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("days: %d: from 1 to %d", days, maxTokenDays))
		return
	}
	if strings.TrimSpace(req.Name) == "" {
		writeError(w, http.StatusBadRequest, "name: required, say what uses the token")
		return
	}
	var secret, id [16]byte
	if _, err := rand.Read(secret[:]); err != nil {
		writeError(w, http.StatusInternalServerError, "no randomness")
		return
	}
	if _, err := rand.Read(id[:8]); err != nil {
		writeError(w, http.StatusInternalServerError, "no randomness")
		return
	}
	tok := "calx_" + base64.RawURLEncoding.EncodeToString(append(id[:8:8], secret[:]...))
	sum := sha256.Sum256([]byte(tok))
	now := time.Now().UTC()
	t := cloud.APIToken{ID: hex.EncodeToString(id[:8]), Name: req.Name, Role: req.Role, Scope: req.Scope, SHA256: hex.EncodeToString(sum[:]),
		Created: now, Expires: now.Add(time.Duration(days) * 24 * time.Hour), CreatedBy: user(r)}
	if err := s.auth.addToken(t); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.c.tokens.PutAPIToken(r.Context(), t); err != nil {
		s.auth.revokeToken(t.ID)
		s.log.Error("token not stored", "err", err)
		writeError(w, http.StatusInternalServerError, "token not stored")
		return
	}
	s.auditAction(r, "token-create", t.Name, fmt.Sprintf("ok: %s, role %s, scope %v, until %s", t.ID, t.Role, t.Scope, t.Expires.Format(time.DateOnly)))
	writeJSON(w, http.StatusCreated, map[string]any{"id": t.ID, "name": t.Name, "role": t.Role, "scope": append(Scope{}, t.Scope...),
		"expires": t.Expires, "token": tok, "note": "shown once: keep it now"})
}

// deleteToken revokes a token at once.
func (s *Server) deleteToken(w http.ResponseWriter, r *http.Request) {
	s.identityMu.Lock()
	defer s.identityMu.Unlock()
	id := chi.URLParam(r, "id")
	if !s.auth.revokeToken(id) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no token %q", id))
		return
	}
	if err := s.c.tokens.DeleteAPIToken(r.Context(), id); err != nil {
		s.log.Error("revoked token not deleted from the store: it comes back at the next start", "id", id, "err", err)
		writeError(w, http.StatusInternalServerError, "token revoked until the next start, but not deleted")
		return
	}
	s.auditAction(r, "token-revoke", id, "ok")
	writeJSON(w, http.StatusOK, map[string]string{"revoked": id})
}
