package web_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/web/webtest"
)

// TestAPITokens: an admin makes a token for a machine (role, scope,
// days); it is shown once, kept only as a hash, works as a bearer token
// within its role and scope, survives a restart and sign-outs, and stops
// at once when revoked; a token past its expiry is refused.
func TestAPITokens(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cloud")
	app := webtest.Start(t, cloud.Options{DataDir: dir})
	admin := app.Admin()
	for _, body := range []map[string]any{
		{"name": "g", "role": "viewer", "days": 0},
		{"name": "g", "role": "viewer", "days": 400},
		{"name": "", "role": "viewer"},
		{"name": "g", "role": "root"},
		{"name": "g", "role": "viewer", "scope": []string{"a/+"}},
	} {
		if code, out := admin.Do("POST", "/api/v1/tokens", body); code != 400 {
			t.Errorf("POST tokens %v: %d %v", body, code, out)
		}
	}
	code, out := admin.Do("POST", "/api/v1/tokens", map[string]any{"name": "grafana", "role": "viewer", "scope": []string{"limeworks/ghent"}, "days": 30})
	secret, _ := out["token"].(string)
	id, _ := out["id"].(string)
	if code != 201 || !strings.HasPrefix(secret, "calx_") || id == "" {
		t.Fatalf("POST tokens: %d %v", code, out)
	}
	grafana := &webtest.Client{T: t, Base: app.Base, Token: secret}
	if code, out := grafana.Do("GET", "/api/v1/namespace", nil); code != 200 {
		t.Fatalf("the token reads: %d %v", code, out)
	}
	if code, _ := grafana.Do("POST", "/api/v1/write", map[string]any{"path": "limeworks/ghent/a/b/c/t", "value": 1}); code != 403 {
		t.Errorf("a viewer token writes: %d", code)
	}
	if code, _ := grafana.Do("POST", "/api/v1/sql", map[string]any{"query": "SELECT 1"}); code != 403 {
		t.Errorf("a viewer token runs SQL: %d", code)
	}
	if code, _ := grafana.Do("POST", "/api/v1/logout", nil); code != 200 {
		t.Errorf("logout with a token: %d", code)
	}
	if code, _ := grafana.Do("GET", "/api/v1/namespace", nil); code != 200 {
		t.Errorf("the token after a sign-out: %d, want 200 (tokens are revoked, not signed out)", code)
	}
	_, list := admin.Do("GET", "/api/v1/tokens", nil)
	if l := text(list); strings.Contains(l, secret) || !strings.Contains(l, `"name":"grafana"`) || !strings.Contains(l, `"last_used"`) {
		t.Errorf("token list: %s", l)
	}
	// Kept as a hash only.
	e, err := app.Cloud.Bus.JetStream().KeyValue(context.Background(), "CALX_API_TOKENS")
	if err != nil {
		t.Fatal(err)
	}
	rec, err := e.Get(context.Background(), id)
	if err != nil || strings.Contains(string(rec.Value()), strings.TrimPrefix(secret, "calx_")) {
		t.Errorf("the stored token: %v %s", err, rec.Value())
	}

	// An expired token: one made to expire, its record put back in the
	// past (the API gives a day at least).
	code, out = admin.Do("POST", "/api/v1/tokens", map[string]any{"name": "old-script", "role": "admin", "days": 1})
	oldSecret, oldID := out["token"].(string), out["id"].(string)
	if code != 201 {
		t.Fatalf("POST tokens: %d %v", code, out)
	}
	ts, err := app.Cloud.APITokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts {
		if tk.ID == oldID {
			tk.Expires = time.Now().Add(-time.Minute)
			if err := app.Cloud.PutAPIToken(context.Background(), tk); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Across a restart: the token still works, the expired one not.
	stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := app.Shutdown(stop); err != nil {
		t.Fatal(err)
	}
	app = webtest.Start(t, cloud.Options{DataDir: dir})
	grafana.Base = app.Base
	// Its last use before the restart is still listed.
	admin = app.Admin()
	_, list = admin.Do("GET", "/api/v1/tokens", nil)
	for _, tk := range list["tokens"].([]any) {
		if m := tk.(map[string]any); m["name"] == "grafana" && m["last_used"] == nil {
			t.Errorf("the token's last use was lost in the restart: %v", m)
		}
	}
	if code, _ := grafana.Do("GET", "/api/v1/namespace", nil); code != 200 {
		t.Errorf("the token after a restart: %d", code)
	}
	old := &webtest.Client{T: t, Base: app.Base, Token: oldSecret}
	if code, _ := old.Do("GET", "/api/v1/namespace", nil); code != 401 {
		t.Errorf("an expired token: %d, want 401", code)
	}
	if code, _ := admin.Do("DELETE", "/api/v1/tokens/"+id, nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	if code, _ := grafana.Do("GET", "/api/v1/namespace", nil); code != 401 {
		t.Errorf("a revoked token: %d, want 401", code)
	}
	if code, _ := admin.Do("DELETE", "/api/v1/tokens/"+id, nil); code != 404 {
		t.Errorf("revoking twice: %d", code)
	}
	_, audit := admin.Do("GET", "/api/v1/audit?limit=100", nil)
	for _, a := range []string{"token-create", "token-revoke"} {
		if !strings.Contains(text(audit), a) {
			t.Errorf("audit without %s", a)
		}
	}
}
