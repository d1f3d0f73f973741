package web

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// User is one UI and API user; the password is kept as a bcrypt hash.
type User struct {
	Username     string
	PasswordHash string
	Role         string // admin, engineer, operator or viewer
	// Scope limits what the user sees and acts on; empty is everything.
	Scope Scope
}

// Roles of UI and API users.
const (
	RoleAdmin    = "admin"
	RoleEngineer = "engineer"
	RoleOperator = "operator" // a viewer who also acknowledges and shelves alarms
	RoleViewer   = "viewer"
)

const (
	sessionCookie = "calx_session"
	sessionTTL    = 12 * time.Hour
)

type session struct {
	user    string
	role    string
	scope   Scope
	expires time.Time
}

// Auth checks passwords and keeps login sessions in memory.
type Auth struct {
	users map[string]User

	mu       sync.Mutex
	sessions map[[32]byte]session
	failures map[string]*failures // by client address
	now      func() time.Time
}

// failures counts failed logins of a key; past its limit it must wait.
type failures struct {
	count int
	until time.Time
	last  time.Time
}

// Failed logins are counted per client address and user name (so that a
// colleague's typing behind the same address locks out no one else), and
// per address, with a higher limit, against guessing many names.
const (
	maxFailures        = 5
	maxAddressFailures = 50
	lockoutFirst       = 30 * time.Second
	lockoutMax         = 15 * time.Minute
)

func pairKey(client, user string) string { return "u\x00" + client + "\x00" + user }
func addrKey(client string) string       { return "a\x00" + client }

// Blocked tells how long a client must wait before it may try a user name
// again.
func (a *Auth) Blocked(client, user string) time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	var wait time.Duration
	for _, k := range []string{pairKey(client, user), addrKey(client)} {
		if f, ok := a.failures[k]; ok {
			wait = max(wait, f.until.Sub(a.now()))
		}
	}
	return wait
}

// forgive clears the failures of a client and user name after a good
// login.
func (a *Auth) forgive(client, user string) {
	a.mu.Lock()
	delete(a.failures, pairKey(client, user))
	a.mu.Unlock()
}

// recordFailure counts a failed login; from the limit on, each locks the
// key out for twice as long as the one before. A count forgets failures
// older than the longest lockout.
func (a *Auth) recordFailure(client, user string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	for _, k := range []struct {
		key   string
		limit int
	}{{pairKey(client, user), maxFailures}, {addrKey(client), maxAddressFailures}} {
		f, ok := a.failures[k.key]
		if !ok || now.Sub(f.last) > lockoutMax {
			if len(a.failures) > 100000 {
				a.failures = map[string]*failures{} // a flood of addresses: start over rather than grow
			}
			f = &failures{}
			a.failures[k.key] = f
		}
		f.count++
		f.last = now
		if f.count >= k.limit {
			f.until = now.Add(min(lockoutFirst<<min(f.count-k.limit, 10), lockoutMax))
		}
	}
}

// Known says whether a user name exists, for logs that must not show a
// name typed wrong (it may be a password).
func (a *Auth) Known(user string) bool {
	_, ok := a.users[user]
	return ok
}

// NewAuth returns an Auth for users.
func NewAuth(users []User) (*Auth, error) {
	a := &Auth{users: map[string]User{}, sessions: map[[32]byte]session{}, failures: map[string]*failures{}, now: time.Now}
	for _, u := range users {
		if u.Username == "" {
			return nil, errors.New("auth: a user without a name")
		}
		if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
			return nil, fmt.Errorf("auth: user %s: password_hash is not a bcrypt hash", u.Username)
		}
		switch u.Role {
		case RoleAdmin, RoleEngineer, RoleOperator, RoleViewer:
		default:
			return nil, fmt.Errorf("auth: user %s: role %q: want admin, engineer, operator or viewer", u.Username, u.Role)
		}
		if err := ValidateScope(u.Scope); err != nil {
			return nil, fmt.Errorf("auth: user %s: %w", u.Username, err)
		}
		a.users[u.Username] = u
	}
	if len(a.users) == 0 {
		return nil, errors.New("auth: no users: the UI and API are never open")
	}
	return a, nil
}

// errLogin is the one answer to a wrong user name or password.
var errLogin = errors.New("wrong username or password")

// Login checks a password and returns a new session token.
func (a *Auth) Login(username, password string) (string, time.Time, error) {
	u, ok := a.users[username]
	if !ok {
		// Spend the same time as a real check so that names cannot be probed.
		_ = bcrypt.CompareHashAndPassword([]byte("$2a$10$AJjvohQPySb.OvxfiH5NNeTDG7gi9CoDlSaf.uoz3XH71QnO1UoGq"), []byte(password))
		return "", time.Time{}, errLogin
	}
	if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
		return "", time.Time{}, errLogin
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("login: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	exp := a.now().Add(sessionTTL)
	a.mu.Lock()
	a.sessions[sha256.Sum256([]byte(tok))] = session{user: u.Username, role: u.Role, scope: u.Scope, expires: exp}
	a.mu.Unlock()
	return tok, exp, nil
}

// Logout ends a session.
func (a *Auth) Logout(tok string) {
	a.mu.Lock()
	delete(a.sessions, sha256.Sum256([]byte(tok)))
	a.mu.Unlock()
}

// check returns the session of a token.
func (a *Auth) check(tok string) (session, bool) {
	if tok == "" {
		return session{}, false
	}
	key := sha256.Sum256([]byte(tok))
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[key]
	if !ok {
		return session{}, false
	}
	if a.now().After(s.expires) {
		delete(a.sessions, key)
		return session{}, false
	}
	return s, true
}

// token finds the session token of a request: a Bearer header, or the
// session cookie the UI's login sets.
func token(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
		return ""
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		return c.Value
	}
	return ""
}
