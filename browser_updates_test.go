package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/release"
	"github.com/calx-iiot/calx/web"
)

// TestBrowserUpdates: an admin uploads a signed build on the fleet page
// and rolls it out to an edge with the page's form; the edge fetches it
// and swaps its binary, and the page shows the rollout and the edge's
// update step. A viewer sees the releases without the forms.
func TestBrowserUpdates(t *testing.T) {
	needBrowser(t)
	dir := t.TempDir()
	t.Setenv("CALX_ADMIN_PASSWORD", "test-admin-pw")
	admin, _, _, err := adminUser()
	if err != nil {
		t.Fatal(err)
	}
	viewerHash, _ := cloud.HashPassword("viewer-pw-long")
	edgeHash, _ := cloud.HashPassword("edge-pw")
	pub, priv, _ := release.Keygen()
	app, err := startCloudApp(context.Background(), cloud.Options{DataDir: filepath.Join(dir, "cloud"), ReleaseKey: pub,
		MQTT: cloud.BrokerOptions{Listen: "127.0.0.1:0", Users: []cloud.MQTTUser{{Username: "kiln-edge", PasswordHash: edgeHash, Role: cloud.RoleEdge, Group: "limeworks", EdgeID: "ghent-edge"}}}},
		[]web.User{admin, {Username: "viewer", PasswordHash: viewerHash, Role: web.RoleViewer}}, web.Options{Listen: "127.0.0.1:0"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.shutdown(context.Background()) })

	// The edge runs 1.0.0 from a binary file of its own.
	exe := filepath.Join(dir, "bin", "calx")
	os.MkdirAll(filepath.Dir(exe), 0o755)
	os.WriteFile(exe, []byte("the running build"), 0o755)
	kiln, _ := sim.New("kiln1", sim.Settings{Interval: time.Second, StartHot: true})
	e, err := edge.New(edge.Options{Broker: "tcp://" + app.cloud.Broker.Addr(), Username: "kiln-edge", Password: "edge-pw", Group: "limeworks", EdgeID: "ghent-edge",
		PrimaryHost: "calx", DataDir: filepath.Join(dir, "edge"), Version: "1.0.0 (abc)",
		Updates: edge.UpdateOptions{PublicKey: pub, Executable: exe},
		Devices: []edge.Device{{ID: "kiln1", Path: "limeworks/ghent/kilns/line1/kiln1", Connector: kiln}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })

	// A signed build of 2.0.0 and its manifest, as calx release sign writes them.
	build := bytes.Repeat([]byte("calx 2.0.0 "), 300000)
	buildFile := filepath.Join(dir, "calx-2.0.0")
	os.WriteFile(buildFile, build, 0o755)
	sum, size, _ := release.Describe(buildFile)
	m := release.Manifest{Version: "2.0.0", OS: runtime.GOOS, Arch: runtime.GOARCH, SHA256: sum, Size: size, Notes: "quicker reconnects"}
	if err := release.Sign(priv, &m); err != nil {
		t.Fatal(err)
	}
	mb, _ := json.Marshal(m)
	manifestFile := buildFile + ".manifest.json"
	os.WriteFile(manifestFile, mb, 0o644)

	b := newBrowserSession(t, "http://"+app.web.Addr())
	b.do("sign-in page", chromedp.Navigate(b.base+"/login"))
	b.login("admin", "test-admin-pw", "header.top")
	b.open("/fleet", `tr[data-edge="limeworks/ghent-edge"]`)
	b.waitJS("the updates panel", `document.getElementById("updates-summary").textContent.startsWith("0 releases") && !document.getElementById("update-admin").hidden`, 10*time.Second)
	b.do("upload", chromedp.SetUploadFiles(chromedp.CSS("#ur-manifest"), []string{manifestFile}),
		chromedp.SetUploadFiles(chromedp.CSS("#ur-binary"), []string{buildFile}),
		chromedp.Click(chromedp.CSS(`#upload-release button[type="submit"]`)))
	b.waitJS("the release kept", `document.getElementById("ur-note").textContent.startsWith("release 2.0.0 kept") && !!document.querySelector('#releases tr[data-release="2.0.0"]')`, 15*time.Second)
	if row := eval[string](b, `document.querySelector('#releases tr[data-release="2.0.0"]').textContent`); !strings.Contains(row, runtime.GOOS+"/"+runtime.GOARCH) || !strings.Contains(row, "quicker reconnects") {
		t.Errorf("release row: %q", row)
	}
	b.waitJS("the edge in the roll-out form", `!!document.querySelector('#rr-target option[value="edge:limeworks/ghent-edge"]')`, 10*time.Second)
	eval[bool](b, `(() => { window.confirm = () => true; document.getElementById("rr-target").value = "edge:limeworks/ghent-edge"; document.getElementById("rr-hold").value = "1h"; return true; })()`)
	b.do("roll out", chromedp.Click(chromedp.CSS(`#roll-release button[type="submit"]`)))
	b.waitJS("the rollout", `/edge limeworks\/ghent-edge/.test(document.querySelector("#rollouts tbody").textContent) && /running/.test(document.querySelector("#rollouts tbody").textContent)`, 10*time.Second)
	select {
	case <-e.Restart():
	case <-time.After(30 * time.Second):
		t.Fatalf("the edge did not take the release: %+v", e.UpdateState())
	}
	if got, _ := os.ReadFile(exe); !bytes.Equal(got, build) {
		t.Fatal("the build is not in place")
	}
	// The edge's node metrics come every 5 s, the page's every 10 s.
	b.open("/fleet", `tr[data-edge="limeworks/ghent-edge"]`)
	b.waitJS("the edge's update step", `/1\.0\.0 · 2\.0\.0 restarting/.test(document.querySelector('tr[data-edge="limeworks/ghent-edge"]').textContent)`, 30*time.Second)
	b.do("open the edge", chromedp.Click(chromedp.CSS(`tr[data-edge="limeworks/ghent-edge"]`)), chromedp.WaitVisible(chromedp.CSS("#edge h2")))
	if txt := eval[string](b, `document.getElementById("edge").textContent`); !strings.Contains(txt, "release 2.0.0: restarting") {
		t.Errorf("edge details: %q", txt)
	}
	b.screenshots("fleet-updates")
	b.noErrors("the fleet page with updates")

	// A viewer sees the releases and rollouts, not the forms.
	v := newBrowserSession(t, "http://"+app.web.Addr())
	v.do("sign-in page", chromedp.Navigate(v.base+"/login"))
	v.login("viewer", "viewer-pw-long", "header.top")
	v.open("/fleet", `#releases tr[data-release="2.0.0"]`)
	if !eval[bool](v, `document.getElementById("update-admin").hidden`) {
		t.Error("a viewer sees the update forms")
	}
	v.noErrors("the fleet page as a viewer")
}
