package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/webtest"
)

// TestUsersAtRunTime: an admin creates a scoped user, who signs in and
// sees their site; changing the user's scope or removing them ends their
// sessions, the live stream included; a short password, a config user,
// a viewer managing users and a wrong current password are refused; every
// change is in the audit log, and API users survive a restart.
func TestUsersAtRunTime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cloud")
	viewerHash, _ := cloud.HashPassword("viewer-pw-123456")
	app := webtest.Start(t, cloud.Options{DataDir: dir}, web.User{Username: "vera", PasswordHash: viewerHash, Role: web.RoleViewer})
	admin := app.Admin()

	for _, c := range []struct {
		body any
		want int
		says string
	}{
		{map[string]any{"username": "ghent", "password": "short", "role": "viewer"}, 400, "at least 12"},
		{map[string]any{"username": "ghent", "password": "long-enough-pw", "role": "boss"}, 400, "role"},
		{map[string]any{"username": "ghent", "password": "long-enough-pw", "role": "viewer", "scope": []string{"limeworks/#"}}, 400, "scope"},
		{map[string]any{"username": "vera", "password": "long-enough-pw", "role": "viewer"}, 409, "cloud.yaml"},
		{map[string]any{"username": "ghent", "password": "ghent-password-1", "role": "operator", "scope": []string{"limeworks/ghent"}}, 201, "ghent"},
		{map[string]any{"username": "ghent", "password": "ghent-password-1", "role": "operator"}, 409, "exists"},
	} {
		code, out := admin.Do("POST", "/api/v1/users", c.body)
		if code != c.want || !strings.Contains(strings.ToLower(text(out)), strings.ToLower(c.says)) {
			t.Errorf("POST users %v: %d %v, want %d saying %q", c.body, code, out, c.want, c.says)
		}
	}
	vera := webtest.Login(t, app.Base, "vera", "viewer-pw-123456")
	if code, _ := vera.Do("POST", "/api/v1/users", map[string]any{"username": "x", "password": "long-enough-pw", "role": "admin"}); code != 403 {
		t.Errorf("a viewer creating a user: %d", code)
	}
	if code, _ := vera.Do("POST", "/api/v1/me/password", map[string]any{"current": "viewer-pw-123456", "new": "another-long-pw"}); code != 409 {
		t.Errorf("a config user changing their password through the API: %d", code)
	}
	if code, _ := admin.Do("DELETE", "/api/v1/users/vera", nil); code != 409 {
		t.Errorf("deleting a config user: %d", code)
	}

	ghent := webtest.Login(t, app.Base, "ghent", "ghent-password-1")
	if code, out := ghent.Do("GET", "/api/v1/namespace", nil); code != 200 {
		t.Fatalf("the new user's namespace: %d %v", code, out)
	}
	if code, out := ghent.Do("POST", "/api/v1/me/password", map[string]any{"current": "wrong-password", "new": "ghent-password-2"}); code != 403 {
		t.Errorf("own password with a wrong current one: %d %v", code, out)
	}
	if code, out := ghent.Do("POST", "/api/v1/me/password", map[string]any{"current": "ghent-password-1", "new": "ghent-password-2"}); code != 200 {
		t.Fatalf("own password: %d %v", code, out)
	}
	if code, _ := ghent.Do("GET", "/api/v1/namespace", nil); code != 401 {
		t.Errorf("the session after a password change: %d, want 401", code)
	}
	ghent = webtest.Login(t, app.Base, "ghent", "ghent-password-2")

	// A scope change ends the session, a live stream included.
	stream := openLive(t, app.Base, ghent.Token)
	if code, out := admin.Do("PATCH", "/api/v1/users/ghent", map[string]any{"scope": []string{"limeworks/namur"}}); code != 200 || text(out["scope"]) != `["limeworks/namur"]` {
		t.Fatalf("PATCH scope: %d %v", code, out)
	}
	if code, _ := ghent.Do("GET", "/api/v1/namespace", nil); code != 401 {
		t.Errorf("the session after a scope change: %d, want 401", code)
	}
	if !stream.endsSignedOut(10 * time.Second) {
		t.Error("the live stream of a changed user goes on")
	}
	ghent = webtest.Login(t, app.Base, "ghent", "ghent-password-2")
	other := webtest.Login(t, app.Base, "ghent", "ghent-password-2")
	if code, out := admin.Do("POST", "/api/v1/users/ghent/sign-out", nil); code != 200 || out["ended"] != 2.0 {
		t.Errorf("an admin signs a user out everywhere: %d %v", code, out)
	}
	for _, c := range []*webtest.Client{ghent, other} {
		if code, _ := c.Do("GET", "/api/v1/namespace", nil); code != 401 {
			t.Errorf("a sign-in after the admin signed the user out: %d", code)
		}
	}
	if code, _ := vera.Do("POST", "/api/v1/users/ghent/sign-out", nil); code != 403 {
		t.Errorf("a viewer signs a user out: %d", code)
	}
	ghent = webtest.Login(t, app.Base, "ghent", "ghent-password-2")
	if _, out := admin.Do("GET", "/api/v1/users", nil); !strings.Contains(text(out["users"]), `{"role":"operator","scope":["limeworks/namur"],"source":"api","username":"ghent"}`) {
		t.Errorf("users: %v", out)
	}

	// Users made through the API survive a restart.
	stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Shutdown(stop); err != nil {
		t.Fatal(err)
	}
	app = webtest.Start(t, cloud.Options{DataDir: dir})
	admin = app.Admin()
	ghent = webtest.Login(t, app.Base, "ghent", "ghent-password-2")
	stream = openLive(t, app.Base, ghent.Token)
	if code, _ := admin.Do("DELETE", "/api/v1/users/ghent", nil); code != 200 {
		t.Fatalf("DELETE: %d", code)
	}
	if code, _ := ghent.Do("GET", "/api/v1/namespace", nil); code != 401 {
		t.Errorf("a removed user's session: %d, want 401", code)
	}
	if !stream.endsSignedOut(10 * time.Second) {
		t.Error("the live stream of a removed user goes on")
	}
	if code, _ := (&webtest.Client{T: t, Base: app.Base}).Do("POST", "/api/v1/login", map[string]string{"username": "ghent", "password": "ghent-password-2"}); code != 401 {
		t.Errorf("a removed user signs in: %d", code)
	}
	_, out := admin.Do("GET", "/api/v1/audit?limit=100", nil)
	for _, action := range []string{"user-delete"} {
		if !strings.Contains(text(out), action) {
			t.Errorf("audit log without %s: %v", action, out)
		}
	}
}

// text is v as JSON, for looking into an answer.
func text(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// liveStream is an open GET /api/v1/live.
type liveStream struct {
	lines chan string
}

func openLive(t *testing.T, base, tok string) *liveStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/live", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 200 {
		t.Fatalf("live: %d", res.StatusCode)
	}
	s := &liveStream{lines: make(chan string, 100)}
	go func() {
		defer res.Body.Close()
		defer close(s.lines)
		sc := bufio.NewScanner(res.Body)
		for sc.Scan() {
			select {
			case s.lines <- sc.Text():
			default:
			}
		}
	}()
	return s
}

// endsSignedOut reports whether the stream says signed-out and ends
// within d.
func (s *liveStream) endsSignedOut(d time.Duration) bool {
	deadline := time.After(d)
	said := false
	for {
		select {
		case l, ok := <-s.lines:
			if !ok {
				return said
			}
			said = said || l == "event: signed-out"
		case <-deadline:
			return false
		}
	}
}
