package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/cloud"
)

// The users of the UI and API at run time: admins list, create, change and
// remove them; every user changes their own password. Users made here are
// kept by the cloud; those of cloud.yaml are changed in the file. Every
// change is in the audit log, and ends the user's sessions.

// loadUsers adds the users the cloud keeps to auth; a config user of the
// same name wins.
func (s *Server) loadUsers(ctx context.Context) error {
	us, err := s.c.users.UIUsers(ctx)
	if err != nil {
		return err
	}
	for _, u := range us {
		if err := s.auth.putAPIUser(User{Username: u.Username, PasswordHash: u.PasswordHash, Role: u.Role, Scope: u.Scope}, false); err != nil {
			s.log.Warn("stored user not loaded", "username", u.Username, "err", err)
		}
	}
	return nil
}

// userRequest is the body of POST and PATCH /api/v1/users.
type userRequest struct {
	Username string  `json:"username"`
	Password *string `json:"password"`
	Role     *string `json:"role"`
	Scope    *Scope  `json:"scope"`
}

func checkPassword(pw string) error {
	if len(pw) < minPasswordLength {
		return fmt.Errorf("password: at least %d characters", minPasswordLength)
	}
	if len(pw) > 72 {
		return errors.New("password: at most 72 bytes")
	}
	return nil
}

func (s *Server) users(w http.ResponseWriter, r *http.Request) {
	us := s.auth.list()
	writeJSON(w, http.StatusOK, map[string]any{"count": len(us), "users": us})
}

// createUser makes a user: {"username", "password", "role", "scope"}.
func (s *Server) createUser(w http.ResponseWriter, r *http.Request) {
	var req userRequest
	if err := decodeBody(r, &req, `{"username": "...", "password": "at least 12 characters", "role": "viewer", "scope": ["limeworks/ghent"]}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Password == nil || req.Role == nil {
		writeError(w, http.StatusBadRequest, "password and role: required")
		return
	}
	u := User{Username: req.Username, Role: *req.Role}
	if req.Scope != nil {
		u.Scope = *req.Scope
	}
	s.saveUser(w, r, u, *req.Password, false)
}

// changeUser changes any of a user's password, role and scope.
func (s *Server) changeUser(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	var req userRequest
	if err := decodeBody(r, &req, `{"password": "...", "role": "...", "scope": [...]}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	u, _, ok := s.auth.user(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no user %q", name))
		return
	}
	pw := ""
	if req.Password != nil {
		pw = *req.Password
	}
	if req.Role != nil {
		u.Role = *req.Role
	}
	if req.Scope != nil {
		u.Scope = *req.Scope
	}
	s.saveUser(w, r, u, pw, true)
}

// saveUser hashes pw (when given), stores u with the cloud and in auth.
func (s *Server) saveUser(w http.ResponseWriter, r *http.Request, u User, pw string, replace bool) {
	s.identityMu.Lock()
	defer s.identityMu.Unlock()
	action := "user-create"
	if replace {
		action = "user-change"
	}
	if pw != "" || !replace {
		if err := checkPassword(pw); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		h, err := cloud.HashPassword(pw)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "password not hashed")
			return
		}
		u.PasswordHash = h
	}
	if err := validateUser(u); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if cur, api, ok := s.auth.user(u.Username); ok && !api {
		s.auditAction(r, action, u.Username, "refused: "+errConfigUser.Error())
		writeError(w, http.StatusConflict, errConfigUser.Error())
		return
	} else if ok && !replace {
		writeError(w, http.StatusConflict, fmt.Sprintf("user %q exists", u.Username))
		return
	} else if ok && pw == "" {
		u.PasswordHash = cur.PasswordHash
	}
	if err := s.c.users.PutUIUser(r.Context(), cloud.UIUser{Username: u.Username, PasswordHash: u.PasswordHash, Role: u.Role, Scope: u.Scope}); err != nil {
		s.log.Error("user not stored", "username", u.Username, "err", err)
		writeError(w, http.StatusInternalServerError, "user not stored")
		return
	}
	if err := s.auth.putAPIUser(u, replace); err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	what := []string{"role " + u.Role, fmt.Sprintf("scope %v", u.Scope)}
	if pw != "" {
		what = append(what, "password")
	}
	s.auditAction(r, action, u.Username, "ok: "+strings.Join(what, ", "))
	status := http.StatusOK
	if !replace {
		status = http.StatusCreated
	}
	writeJSON(w, status, userInfo{Username: u.Username, Role: u.Role, Scope: append(Scope{}, u.Scope...), Source: "api"})
}

// deleteUser removes a user made through the API; its sessions end.
func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) {
	s.identityMu.Lock()
	defer s.identityMu.Unlock()
	name := chi.URLParam(r, "name")
	_, api, ok := s.auth.user(name)
	switch {
	case !ok:
		writeError(w, http.StatusNotFound, fmt.Sprintf("no user %q", name))
		return
	case !api:
		s.auditAction(r, "user-delete", name, "refused: "+errConfigUser.Error())
		writeError(w, http.StatusConflict, errConfigUser.Error())
		return
	}
	if err := s.c.users.DeleteUIUser(r.Context(), name); err != nil {
		s.log.Error("user not deleted", "username", name, "err", err)
		writeError(w, http.StatusInternalServerError, "user not deleted")
		return
	}
	if err := s.auth.removeAPIUser(name); err != nil {
		writeError(w, http.StatusConflict, err.Error())
		return
	}
	s.auditAction(r, "user-delete", name, "ok")
	writeJSON(w, http.StatusOK, map[string]string{"deleted": name})
}

// changeOwnPassword: {"current", "new"}; the user's other sessions end,
// and this one too: sign in again.
func (s *Server) changeOwnPassword(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Current string `json:"current"`
		New     string `json:"new"`
	}
	if err := decodeBody(r, &req, `{"current": "...", "new": "at least 12 characters"}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sess, _ := r.Context().Value(ctxKey{}).(session)
	u, api, ok := s.auth.user(sess.user)
	switch {
	case sess.sso:
		writeError(w, http.StatusConflict, "you signed in through the identity provider: change your password there")
		return
	case !ok:
		writeError(w, http.StatusUnauthorized, "signed out")
		return
	case !api:
		writeError(w, http.StatusConflict, errConfigUser.Error())
		return
	case bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(req.Current)) != nil:
		s.auditAction(r, "password-change", u.Username, "refused: "+errWrongPassword.Error())
		writeError(w, http.StatusForbidden, errWrongPassword.Error())
		return
	}
	s.saveUser(w, r, u, req.New, true)
}

// signOutUser ends every sign-in of a user (a lost laptop, a shift
// handed over), without changing the user; a user of single sign-on has
// no entry here, only sign-ins.
func (s *Server) signOutUser(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "name")
	_, _, ok := s.auth.user(name)
	n := s.auth.endSessions(name)
	if !ok && n == 0 {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no user %q, and no sign-in of that name", name))
		return
	}
	s.auditAction(r, "user-sign-out", name, fmt.Sprintf("ok: %d sign-ins ended", n))
	writeJSON(w, http.StatusOK, map[string]any{"user": name, "ended": n})
}
