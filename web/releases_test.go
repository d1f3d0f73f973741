package web_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/release"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/webtest"
)

// uploadRelease posts a manifest and a binary (parts in that order unless
// swapped) and returns the status and body.
func uploadRelease(t *testing.T, c *webtest.Client, m release.Manifest, bin []byte, swapped bool) (int, string) {
	t.Helper()
	var body bytes.Buffer
	w := multipart.NewWriter(&body)
	mb, _ := json.Marshal(m)
	parts := []struct {
		name string
		data []byte
	}{{"manifest", mb}, {"binary", bin}}
	if swapped {
		parts[0], parts[1] = parts[1], parts[0]
	}
	for _, p := range parts {
		pw, _ := w.CreateFormFile(p.name, p.name)
		pw.Write(p.data)
	}
	w.Close()
	req, _ := http.NewRequest("POST", c.Base+"/api/v1/releases", &body)
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+c.Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(res.Body)
	return res.StatusCode, out.String()
}

// build is a signed build of a release for linux/amd64.
func build(t *testing.T, priv []byte, version string, fill byte) ([]byte, release.Manifest) {
	t.Helper()
	bin := bytes.Repeat([]byte{fill}, 50000)
	file := filepath.Join(t.TempDir(), "calx")
	os.WriteFile(file, bin, 0o755)
	sum, size, _ := release.Describe(file)
	m := release.Manifest{Version: version, OS: "linux", Arch: "amd64", SHA256: sum, Size: size, Notes: "faster restarts"}
	if err := release.Sign(priv, &m); err != nil {
		t.Fatal(err)
	}
	return bin, m
}

// TestReleasesAPI: an admin uploads signed builds; a build that does not
// match its manifest, one signed by another key, and a second build of a
// platform are refused, as is everything without the cloud's key; anyone
// signed in lists them, no one but an admin uploads.
func TestReleasesAPI(t *testing.T) {
	off := webtest.Start(t, cloud.Options{})
	bin, m := build(t, mustKey(t), "1.0.1", 1)
	if code, out := uploadRelease(t, off.Admin(), m, bin, false); code != 409 || !strings.Contains(out, "updates.public_key") {
		t.Fatalf("upload to a cloud without a release key: %d %s", code, out)
	}

	pub, priv, _ := release.Keygen()
	viewer, _ := cloud.HashPassword("viewer-pw")
	app := webtest.Start(t, cloud.Options{ReleaseKey: pub}, web.User{Username: "vera", PasswordHash: viewer, Role: web.RoleViewer})
	admin := app.Admin()
	v := webtest.Login(t, app.Base, "vera", "viewer-pw")
	bin, m = build(t, priv, "1.0.1", 1)
	if code, out := uploadRelease(t, v, m, bin, false); code != 403 {
		t.Fatalf("a viewer uploads: %d %s", code, out)
	}
	if code, out := uploadRelease(t, admin, m, bin, false); code != 201 || !strings.Contains(out, `"version":"1.0.1"`) {
		t.Fatalf("upload: %d %s", code, out)
	}
	if code, out := uploadRelease(t, admin, m, bin, false); code != 201 {
		t.Fatalf("the same build again: %d %s", code, out)
	}
	other, om := build(t, priv, "1.0.1", 2)
	if code, out := uploadRelease(t, admin, om, other, false); code != 409 || !strings.Contains(out, "another build") {
		t.Fatalf("another build of 1.0.1 linux/amd64: %d %s", code, out)
	}
	tampered := bytes.Clone(bin)
	tampered[100] = 9
	m2 := m
	m2.Version = "1.0.2"
	release.Sign(priv, &m2)
	if code, out := uploadRelease(t, admin, m2, tampered, false); code != 400 || !strings.Contains(out, "does not match its manifest") {
		t.Fatalf("a binary that does not match its manifest: %d %s", code, out)
	}
	if code, out := uploadRelease(t, admin, m2, bin[:100], false); code != 400 || !strings.Contains(out, "does not match its manifest") {
		t.Fatalf("a short binary: %d %s", code, out)
	}
	if code, out := admin.Do("GET", "/api/v1/releases/1.0.2", nil); code != 404 {
		t.Fatalf("a refused build kept: %d %v", code, out)
	}
	_, stranger, _ := release.Keygen()
	sb, sm := build(t, stranger, "1.0.3", 3)
	if code, out := uploadRelease(t, admin, sm, sb, false); code != 400 || !strings.Contains(out, "signed by key "+sm.KeyID) {
		t.Fatalf("a build signed by another key: %d %s", code, out)
	}
	m3 := m
	m3.Notes = "changed after signing"
	if code, out := uploadRelease(t, admin, m3, bin, false); code != 400 || !strings.Contains(out, "signature") {
		t.Fatalf("a manifest changed after signing: %d %s", code, out)
	}
	if code, out := uploadRelease(t, admin, m, bin, true); code != 400 || !strings.Contains(out, "the first part must be") {
		t.Fatalf("parts swapped: %d %s", code, out)
	}
	if code, out := admin.Text("POST", "/api/v1/releases", "{}", ""); code != 400 || !strings.Contains(out, "multipart") {
		t.Fatalf("JSON body: %d %s", code, out)
	}
	code, out := v.Do("GET", "/api/v1/releases", nil)
	rels, _ := out["releases"].([]any)
	if code != 200 || len(rels) != 1 {
		t.Fatalf("list: %d %v", code, out)
	}
	if r := rels[0].(map[string]any); r["version"] != "1.0.1" || r["notes"] != "faster restarts" || len(r["builds"].([]any)) != 1 {
		t.Fatalf("release: %v", r)
	}
	code, out = admin.Do("GET", "/api/v1/audit?limit=20", nil)
	if b, _ := json.Marshal(out); code != 200 || !strings.Contains(string(b), "release upload") || !strings.Contains(string(b), "refused") {
		t.Fatalf("audit: %d %s", code, b)
	}
}

func mustKey(t *testing.T) []byte {
	_, priv, err := release.Keygen()
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// TestUpdateRolloutAPI: a rollout is checked, starts with its canary, shows
// each edge's progress, and stops when the canary does not take the
// release in time.
func TestUpdateRolloutAPI(t *testing.T) {
	pub, priv, _ := release.Keygen()
	app := webtest.Start(t, cloud.Options{ReleaseKey: pub})
	admin := app.Admin()
	fleet, err := os.ReadFile("../examples/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if code, out := admin.Text("PUT", "/api/v1/config?message=fleet", string(fleet), ""); code != 201 {
		t.Fatalf("PUT config: %d %s", code, out)
	}
	bin, m := build(t, priv, "2.0.0", 4)
	if code, out := uploadRelease(t, admin, m, bin, false); code != 201 {
		t.Fatalf("upload: %d %s", code, out)
	}
	for _, c := range []struct {
		body any
		code int
		want string
	}{
		{map[string]any{"version": "9.9", "all": true}, 404, "no such release"},
		{map[string]any{"version": "2.0.0"}, 400, "choose one of"},
		{map[string]any{"version": "2.0.0", "edge": "limeworks/nowhere"}, 400, "no edge matches"},
		{map[string]any{"version": "2.0.0", "all": true, "canary": []string{"limeworks/nowhere"}}, 400, "not among the edges"},
		{map[string]any{"version": "2.0.0", "all": true, "canary_count": 2}, 400, "canary_count 2"},
		{map[string]any{"version": "2.0.0", "all": true, "healthy_for": "soon"}, 400, "healthy_for"},
		{map[string]any{"version": "2.0.0", "all": true, "when": "now"}, 400, "unknown field"},
	} {
		code, out := admin.Do("POST", "/api/v1/releases/rollouts", c.body)
		if b, _ := json.Marshal(out); code != c.code || !strings.Contains(string(b), c.want) {
			t.Errorf("%v: %d %s, want %d %q", c.body, code, b, c.code, c.want)
		}
	}
	code, out := admin.Do("POST", "/api/v1/releases/rollouts", map[string]any{"version": "2.0.0", "all": true,
		"canary": []string{"limeworks/namur-edge"}, "healthy_for": "1s", "timeout": "2s"})
	if code != 201 {
		t.Fatalf("rollout: %d %v", code, out)
	}
	ro := out["rollout"].(map[string]any)
	id := ro["id"].(string)
	waves := ro["waves"].([]any)
	if len(waves) != 2 || waves[0].(map[string]any)["state"] != "running" || waves[1].(map[string]any)["state"] != "waiting" {
		t.Fatalf("waves: %v", waves)
	}
	if counts := out["counts"].(map[string]any); counts["updating"] != 1.0 || counts["waiting"] != 1.0 {
		t.Fatalf("counts: %v", out)
	}
	// No edge is connected: the canary wave times out, the rollout stops
	// before the rest.
	edgetest.CheckFor(t, 10*time.Second, 200*time.Millisecond, func() error {
		code, out := admin.Do("GET", "/api/v1/releases/rollouts/"+id, nil)
		ro := out["rollout"].(map[string]any)
		if code != 200 || ro["state"] != "failed" {
			return fmt.Errorf("rollout: %d %v", code, out)
		}
		if reason, _ := ro["reason"].(string); !strings.Contains(reason, "wave canary failed: not on 2.0.0 within 2s: limeworks/namur-edge (offline)") {
			return fmt.Errorf("reason %q", reason)
		}
		if w := ro["waves"].([]any)[1].(map[string]any); w["state"] != "waiting" {
			return fmt.Errorf("the rest started: %v", w)
		}
		return nil
	})
	// The canary edge was assigned the release; the rest not.
	assigned, err := app.Cloud.Updates.Assigned(t.Context())
	if err != nil || len(assigned) != 1 || assigned["limeworks/namur-edge"].Version != "2.0.0" {
		t.Fatalf("assigned: %v %v", assigned, err)
	}
	if code, out := admin.Do("GET", "/api/v1/releases/rollouts/nope", nil); code != 404 {
		t.Fatalf("no such rollout: %d %v", code, out)
	}
	// A rollout that shares an edge with a running one ends it: its waves
	// still waiting would assign their release over the new one's.
	_, first := admin.Do("POST", "/api/v1/releases/rollouts", map[string]any{"version": "2.0.0", "all": true, "canary_count": 1, "timeout": "1h"})
	firstID := first["rollout"].(map[string]any)["id"].(string)
	if code, out := admin.Do("POST", "/api/v1/releases/rollouts", map[string]any{"version": "2.0.0", "edge": "limeworks/namur-edge"}); code != 201 {
		t.Fatalf("second rollout: %d %v", code, out)
	}
	if _, out := admin.Do("GET", "/api/v1/releases/rollouts/"+firstID, nil); out["rollout"].(map[string]any)["state"] != "superseded" ||
		!strings.Contains(out["rollout"].(map[string]any)["reason"].(string), "superseded by u2_0_0-") {
		t.Fatalf("the first rollout: %v", out["rollout"])
	}
	if code, out := admin.Do("GET", "/api/v1/releases/rollouts", nil); code != 200 || out["count"] != 3.0 {
		t.Fatalf("rollouts: %d %v", code, out)
	}
}
