package web

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestAuthSessions(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	a, err := NewAuth([]User{{Username: "ann", PasswordHash: string(h), Role: RoleViewer}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.Login("ann", "nope"); err != errLogin {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, err := a.Login("bob", "pw"); err != errLogin {
		t.Fatalf("unknown user: %v", err)
	}
	tok, _, err := a.Login("ann", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if s, ok := a.check(tok); !ok || s.user != "ann" || s.role != RoleViewer {
		t.Fatalf("session: %+v %v", s, ok)
	}
	if _, ok := a.check(tok + "x"); ok {
		t.Fatal("altered token accepted")
	}
	now := time.Now()
	a.now = func() time.Time { return now.Add(defaultSessionMax + time.Minute) }
	if _, ok := a.check(tok); ok {
		t.Fatal("expired session accepted")
	}
	a.now = time.Now
	tok2, _, _ := a.Login("ann", "pw")
	a.Logout(tok2)
	if _, ok := a.check(tok2); ok {
		t.Fatal("session valid after logout")
	}
}

func TestNewAuthRejects(t *testing.T) {
	for name, us := range map[string][]User{
		"none":       nil,
		"plain pw":   {{Username: "a", PasswordHash: "secret", Role: RoleAdmin}},
		"bad role":   {{Username: "a", PasswordHash: "$2a$04$abcdefghijklmnopqrstuu5Bl0zCW4oP6q/1B1J0kzmvTn6Hk3PzS", Role: "god"}},
		"empty name": {{PasswordHash: "$2a$04$abcdefghijklmnopqrstuu5Bl0zCW4oP6q/1B1J0kzmvTn6Hk3PzS", Role: RoleAdmin}},
	} {
		if _, err := NewAuth(us); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestTokenFromRequest(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer abc")
	if token(r) != "abc" {
		t.Error("bearer token not read")
	}
	r.Header.Set("Authorization", "Basic abc")
	if token(r) != "" {
		t.Error("basic auth taken as a token")
	}
}

func TestRequireRole(t *testing.T) {
	s := &Server{}
	h := s.requireRole(RoleAdmin, RoleEngineer)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	for role, want := range map[string]int{RoleAdmin: 204, RoleEngineer: 204, RoleViewer: 403, "": 403} {
		r := httptest.NewRequest("POST", "/api/v1/write", nil)
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, session{user: "u", role: role}))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("role %q: %d, want %d", role, w.Code, want)
		}
		if want == 403 && !strings.Contains(w.Body.String(), `"error"`) {
			t.Errorf("403 body not JSON error: %s", w.Body)
		}
	}
}

func TestLoginLockout(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	a, err := NewAuth([]User{{Username: "ann", PasswordHash: string(h), Role: RoleViewer}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a.now = func() time.Time { return now }
	for i := range maxFailures - 1 {
		a.recordFailure("10.0.0.9", "ann")
		if a.Blocked("10.0.0.9", "ann") != 0 {
			t.Fatalf("blocked after %d failures", i+1)
		}
	}
	a.recordFailure("10.0.0.9", "ann")
	if got := a.Blocked("10.0.0.9", "ann"); got != lockoutFirst {
		t.Fatalf("after %d failures: blocked for %s, want %s", maxFailures, got, lockoutFirst)
	}
	if a.Blocked("10.0.0.10", "ann") != 0 {
		t.Fatal("another client is blocked too")
	}
	if a.Blocked("10.0.0.9", "bob") != 0 {
		t.Fatal("another user behind the same address is blocked too")
	}
	a.recordFailure("10.0.0.9", "ann")
	if got := a.Blocked("10.0.0.9", "ann"); got != 2*lockoutFirst {
		t.Fatalf("one more failure: blocked for %s, want %s", got, 2*lockoutFirst)
	}
	for range 20 {
		a.recordFailure("10.0.0.9", "ann")
	}
	if got := a.Blocked("10.0.0.9", "ann"); got != lockoutMax {
		t.Fatalf("many failures: blocked for %s, want the cap %s", got, lockoutMax)
	}
	now = now.Add(lockoutMax + time.Second)
	if a.Blocked("10.0.0.9", "ann") != 0 {
		t.Fatal("still blocked after the lockout")
	}
	a.forgive("10.0.0.9", "ann")
	a.recordFailure("10.0.0.9", "ann")
	if a.Blocked("10.0.0.9", "ann") != 0 {
		t.Fatal("a good login did not clear the count")
	}
	// Guessing many names from one address: the address is blocked.
	for i := range maxAddressFailures {
		a.recordFailure("10.0.0.11", fmt.Sprint("name", i))
	}
	if a.Blocked("10.0.0.11", "someone-else") == 0 {
		t.Fatal("an address guessing many names is not blocked")
	}
}

// TestSessionIdleAndEverywhere: a sign-in unused for longer than the idle
// time ends, one in use lasts until its maximum; signing out everywhere
// ends every sign-in of the user and no one else's.
func TestSessionIdleAndEverywhere(t *testing.T) {
	h, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	a, err := NewAuth([]User{{Username: "ann", PasswordHash: string(h), Role: RoleViewer}, {Username: "bob", PasswordHash: string(h), Role: RoleViewer}})
	if err != nil {
		t.Fatal(err)
	}
	a.setLifetimes(time.Hour, 4*time.Hour)
	now := time.Now()
	a.now = func() time.Time { return now }
	idle, _, _ := a.Login("ann", "pw")
	busy, _, _ := a.Login("ann", "pw")
	for range 6 { // 3 h, busy in use every 30 min
		now = now.Add(30 * time.Minute)
		if _, ok := a.check(busy); !ok {
			t.Fatalf("a sign-in in use ended after %s", 30*time.Minute)
		}
	}
	if _, ok := a.check(idle); ok {
		t.Fatal("a sign-in unused for 3 h, idle limit 1 h, still holds")
	}
	now = now.Add(61 * time.Minute) // 4 h 1 min after sign-in
	if _, ok := a.check(busy); ok {
		t.Fatal("a sign-in outlived its maximum")
	}

	now = time.Now()
	ann1, _, _ := a.Login("ann", "pw")
	ann2, _, _ := a.Login("ann", "pw")
	bob, _, _ := a.Login("bob", "pw")
	a.logoutEverywhere(ann1)
	for name, tok := range map[string]string{"this sign-in": ann1, "the other sign-in": ann2} {
		if _, ok := a.check(tok); ok {
			t.Errorf("%s of ann holds after signing out everywhere", name)
		}
	}
	if _, ok := a.check(bob); !ok {
		t.Error("bob's sign-in ended when ann signed out everywhere")
	}
}

// A reloaded config file: a changed or removed user's sign-ins end, an
// unchanged one's hold, users of the API stay, and a bad file changes
// nothing.
func TestReloadConfigUsers(t *testing.T) {
	hash := func(pw string) string {
		h, _ := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		return string(h)
	}
	ann, bob, cid := User{Username: "ann", PasswordHash: hash("pw-ann"), Role: RoleViewer}, User{Username: "bob", PasswordHash: hash("pw-bob"), Role: RoleOperator},
		User{Username: "cid", PasswordHash: hash("pw-cid"), Role: RoleAdmin}
	a, err := NewAuth([]User{ann, bob, cid})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.putAPIUser(User{Username: "api", PasswordHash: hash("pw-api"), Role: RoleViewer}, false); err != nil {
		t.Fatal(err)
	}
	toks := map[string]string{}
	for _, u := range []string{"ann", "bob", "cid", "api"} {
		if toks[u], _, err = a.Login(u, "pw-"+u); err != nil {
			t.Fatal(err)
		}
	}
	bob.Scope = Scope{"limeworks/ghent"}
	changed, err := a.ReloadConfigUsers([]User{ann, bob, {Username: "dora", PasswordHash: hash("pw-dora"), Role: RoleViewer}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(changed) != "[bob cid dora]" {
		t.Errorf("changed: %v", changed)
	}
	for u, holds := range map[string]bool{"ann": true, "bob": false, "cid": false, "api": true} {
		if _, ok := a.check(toks[u]); ok != holds {
			t.Errorf("%s's sign-in holds: %t, want %t", u, ok, holds)
		}
	}
	if _, _, err := a.Login("cid", "pw-cid"); err == nil {
		t.Error("a removed user signs in")
	}
	if tok, _, err := a.Login("bob", "pw-bob"); err != nil {
		t.Error(err)
	} else if s, _ := a.check(tok); len(s.scope) != 1 {
		t.Errorf("bob's new scope: %v", s.scope)
	}
	for _, bad := range [][]User{
		{ann, {Username: "api", PasswordHash: hash("x"), Role: RoleViewer}},
		{ann, {Username: "eve", PasswordHash: "plain", Role: RoleViewer}},
		{ann, ann},
	} {
		if _, err := a.ReloadConfigUsers(bad); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
	if _, _, err := a.Login("dora", "pw-dora"); err != nil {
		t.Errorf("dora after refused reloads: %v", err)
	}
}
