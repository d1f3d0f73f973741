package web

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"

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
	sessionCookie      = "calx_session"
	defaultSessionIdle = 2 * time.Hour
	defaultSessionMax  = 12 * time.Hour
)

type session struct {
	user    string
	role    string
	scope   Scope
	expires time.Time
	used    time.Time // last seen, for the idle timeout (not of tokens)
	tokenID string    // an API token's, which outlives sign-outs
	sso     bool      // signed in through the identity provider
}

// Auth checks passwords and keeps login sessions in memory. Its users are
// those of the config file and those made through the API (kept by the
// cloud); mu guards both and the sessions.
type Auth struct {
	mu         sync.Mutex
	users      map[string]User
	api        map[string]bool      // users made through the API
	tokenUse   map[string]time.Time // last use of each API token
	tokenSaved map[string]time.Time // the last use written down, of each
	idle       time.Duration        // a sign-in unused this long ends
	ttl        time.Duration        // a sign-in ends this long after it began
	sessions   map[[32]byte]session
	failures   map[string]*failures // by client address
	now        func() time.Time
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
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.users[user]
	return ok
}

// NewAuth returns an Auth for users (those of the config file).
func NewAuth(users []User) (*Auth, error) {
	a := &Auth{users: map[string]User{}, api: map[string]bool{}, tokenUse: map[string]time.Time{}, tokenSaved: map[string]time.Time{}, idle: defaultSessionIdle, ttl: defaultSessionMax, sessions: map[[32]byte]session{}, failures: map[string]*failures{}, now: time.Now}
	for _, u := range users {
		if err := validateUser(u); err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		a.users[u.Username] = u
	}
	if len(a.users) == 0 {
		return nil, errors.New("auth: no users: the UI and API are never open")
	}
	return a, nil
}

func validateUser(u User) error {
	if u.Username == "" {
		return errors.New("a user without a name")
	}
	if len(u.Username) > 128 || strings.ContainsFunc(u.Username, unicode.IsControl) {
		return fmt.Errorf("user %q: username: at most 128 characters, none of them control characters", u.Username)
	}
	if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
		return fmt.Errorf("user %s: password_hash is not a bcrypt hash", u.Username)
	}
	return checkRoleScope("user "+u.Username, u.Role, u.Scope)
}

// checkRoleScope checks a user's or a token's role and scope.
func checkRoleScope(who, role string, scope Scope) error {
	switch role {
	case RoleAdmin, RoleEngineer, RoleOperator, RoleViewer:
	default:
		return fmt.Errorf("%s: role %q: want admin, engineer, operator or viewer", who, role)
	}
	if err := ValidateScope(scope); err != nil {
		return fmt.Errorf("%s: %w", who, err)
	}
	return nil
}

// errLogin is the one answer to a wrong user name or password.
var errLogin = errors.New("wrong username or password")

// Login checks a password and returns a new session token.
func (a *Auth) Login(username, password string) (string, time.Time, error) {
	a.mu.Lock()
	u, ok := a.users[username]
	a.mu.Unlock()
	if !ok {
		// Spend the same time as a real check so that names cannot be probed.
		_ = bcrypt.CompareHashAndPassword([]byte("$2a$10$AJjvohQPySb.OvxfiH5NNeTDG7gi9CoDlSaf.uoz3XH71QnO1UoGq"), []byte(password))
		return "", time.Time{}, errLogin
	}
	if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
		return "", time.Time{}, errLogin
	}
	return a.startSession(u, false)
}

// startSession signs a user in: a local one whose password was checked,
// or one the identity provider vouched for (sso).
func (a *Auth) startSession(u User, sso bool) (string, time.Time, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", time.Time{}, fmt.Errorf("login: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	now := a.now()
	exp := now.Add(a.ttl)
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, ok := a.users[u.Username]
	switch {
	case !sso && (!ok || cur.PasswordHash != u.PasswordHash):
		return "", time.Time{}, errLogin // removed or changed meanwhile
	case sso && ok:
		return "", time.Time{}, fmt.Errorf("a local user named %q was made meanwhile", u.Username)
	}
	a.sessions[sha256.Sum256([]byte(tok))] = session{user: u.Username, role: u.Role, scope: u.Scope, expires: exp, used: now, sso: sso}
	return tok, exp, nil
}

// Logout ends a session (an API token is revoked instead).
func (a *Auth) Logout(tok string) {
	key := sha256.Sum256([]byte(tok))
	a.mu.Lock()
	if a.sessions[key].tokenID == "" {
		delete(a.sessions, key)
	}
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
	now := a.now()
	if now.After(s.expires) || s.tokenID == "" && now.Sub(s.used) > a.idle {
		if s.tokenID == "" {
			delete(a.sessions, key)
		}
		return session{}, false
	}
	if s.tokenID != "" {
		a.tokenUse[s.tokenID] = now
	} else {
		s.used = now
		a.sessions[key] = s
	}
	return s, true
}

// setLifetimes sets how long an unused sign-in lasts, and any.
func (a *Auth) setLifetimes(idle, max time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.idle, a.ttl = idle, max
}

// logoutEverywhere ends every sign-in of the session's user (not tokens).
func (a *Auth) logoutEverywhere(tok string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if s, ok := a.sessions[sha256.Sum256([]byte(tok))]; ok && s.tokenID == "" {
		a.endSessionsLocked(s.user)
	}
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

// Errors of the user changes.
var (
	errUserExists    = errors.New("a user of that name exists")
	errNoUser        = errors.New("no such user")
	errConfigUser    = errors.New("the user is declared in cloud.yaml: change it there")
	errWrongPassword = errors.New("the current password is wrong")
)

// minPasswordLength is the shortest password a user may be given.
const minPasswordLength = 12

// userInfo is a user as the API lists it.
type userInfo struct {
	Username string `json:"username"`
	Role     string `json:"role"`
	Scope    Scope  `json:"scope"`
	Source   string `json:"source"` // config or api
}

// list returns every user, by name.
func (a *Auth) list() []userInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]userInfo, 0, len(a.users))
	for _, u := range a.users {
		src := "config"
		if a.api[u.Username] {
			src = "api"
		}
		out = append(out, userInfo{Username: u.Username, Role: u.Role, Scope: append(Scope{}, u.Scope...), Source: src})
	}
	slices.SortFunc(out, func(x, y userInfo) int { return strings.Compare(x.Username, y.Username) })
	return out
}

// user returns a user and whether it was made through the API.
func (a *Auth) user(name string) (User, bool, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	u, ok := a.users[name]
	return u, a.api[name], ok
}

// putAPIUser adds or replaces a user made through the API (never one of
// the config file); replacing ends the user's sessions, so that a new
// password, role or scope holds at once.
func (a *Auth) putAPIUser(u User, replace bool) error {
	if err := validateUser(u); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	_, exists := a.users[u.Username]
	switch {
	case exists && !a.api[u.Username]:
		return errConfigUser
	case exists && !replace:
		return errUserExists
	case !exists && replace:
		return errNoUser
	}
	a.users[u.Username] = u
	a.api[u.Username] = true
	a.endSessionsLocked(u.Username)
	return nil
}

// removeAPIUser forgets a user made through the API and ends its sessions.
func (a *Auth) removeAPIUser(name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.users[name]; !ok {
		return errNoUser
	}
	if !a.api[name] {
		return errConfigUser
	}
	delete(a.users, name)
	delete(a.api, name)
	a.endSessionsLocked(name)
	return nil
}

// ReloadConfigUsers puts the users of a reloaded config file in place of
// those of the last one: a user gone or changed (password, role, scope)
// has its sign-ins ended. Users made through the API stay; a file's user
// of the same name as one of them is refused. Nothing changes unless
// every user is valid. It returns the names added, changed or removed.
func (a *Auth) ReloadConfigUsers(users []User) ([]string, error) {
	next := make(map[string]User, len(users))
	for _, u := range users {
		if err := validateUser(u); err != nil {
			return nil, err
		}
		if _, dup := next[u.Username]; dup {
			return nil, fmt.Errorf("user %q: named twice", u.Username)
		}
		next[u.Username] = u
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for name := range next {
		if a.api[name] {
			return nil, fmt.Errorf("user %q: made through the API already; delete it there first", name)
		}
	}
	if len(next) == 0 && len(a.api) == 0 {
		return nil, errors.New("no users: the UI and API would be closed to everyone")
	}
	var changed []string
	for name, old := range a.users {
		if a.api[name] {
			continue
		}
		if u, kept := next[name]; !kept || u.PasswordHash != old.PasswordHash || u.Role != old.Role || !slices.Equal(u.Scope, old.Scope) {
			delete(a.users, name)
			a.endSessionsLocked(name)
			changed = append(changed, name)
		}
	}
	for name, u := range next {
		if _, ok := a.users[name]; !ok {
			if !slices.Contains(changed, name) {
				changed = append(changed, name)
			}
			a.users[name] = u
		}
	}
	slices.Sort(changed)
	return changed, nil
}

// endSessions ends every sign-in of a user; it says how many.
func (a *Auth) endSessions(name string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.endSessionsLocked(name)
}

func (a *Auth) endSessionsLocked(name string) int {
	n := 0
	for k, s := range a.sessions {
		if s.user == name && s.tokenID == "" {
			delete(a.sessions, k)
			n++
		}
	}
	return n
}
