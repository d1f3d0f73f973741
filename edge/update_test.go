package edge_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/release"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	"github.com/calx-iiot/calx/web/webtest"
)

// updateSite is a cloud that takes releases signed by cloudKey and an edge
// "g/e" that pins edgeKey, whose binary is a file of its own.
type updateSite struct {
	app  *webtest.App
	edge *edge.Edge
	exe  string
	old  []byte
	data string
	// releases is the cloud's copy of the builds it serves.
	releases string
}

func newUpdateSite(t *testing.T, cloudKey, edgeKey ed25519.PublicKey, maxRate int64) *updateSite {
	t.Helper()
	dir := t.TempDir()
	hash, err := cloud.HashPassword("edge-pw")
	if err != nil {
		t.Fatal(err)
	}
	app := webtest.Start(t, cloud.Options{DataDir: filepath.Join(dir, "cloud"), ReleaseKey: cloudKey,
		MQTT: cloud.BrokerOptions{Listen: "127.0.0.1:0", Users: []cloud.MQTTUser{{Username: "e", PasswordHash: hash, Role: cloud.RoleEdge, Group: "g", EdgeID: "e"}}}})
	s := &updateSite{app: app, exe: filepath.Join(dir, "bin", "calx"), old: bytes.Repeat([]byte("old build "), 1000), data: filepath.Join(dir, "edge"),
		releases: filepath.Join(dir, "cloud", "releases")}
	os.MkdirAll(filepath.Dir(s.exe), 0o755)
	os.WriteFile(s.exe, s.old, 0o755)
	kiln, _ := sim.New("k", sim.Settings{Interval: 50 * time.Millisecond, StartHot: true})
	s.edge = edgetest.Start(t, edge.Options{Broker: "tcp://" + app.Cloud.Broker.Addr(), Username: "e", Password: "edge-pw", Group: "g", EdgeID: "e",
		PrimaryHost: "calx", DataDir: s.data, Version: "1.0.0",
		Updates: edge.UpdateOptions{PublicKey: edgeKey, Executable: s.exe, ChunkSize: 64 << 10, MaxBytesPerSecond: maxRate},
		Devices: []edge.Device{{ID: "kiln", Path: "ent/site/area/line/kiln", Connector: kiln}}})
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !s.edge.Online() {
			return fmt.Errorf("edge not born")
		}
		return nil
	})
	return s
}

// signed writes a build of n bytes and its manifest signed by priv.
func signed(t *testing.T, priv ed25519.PrivateKey, version string, n int) ([]byte, release.Manifest) {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	copy(b, version)
	file := filepath.Join(t.TempDir(), "build")
	os.WriteFile(file, b, 0o755)
	sum, size, _ := release.Describe(file)
	m := release.Manifest{Version: version, OS: runtime.GOOS, Arch: runtime.GOARCH, SHA256: sum, Size: size}
	if err := release.Sign(priv, &m); err != nil {
		t.Fatal(err)
	}
	return b, m
}

func (s *updateSite) roll(t *testing.T, priv ed25519.PrivateKey, version string, build []byte, m release.Manifest) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.app.Cloud.Updates.Upload(ctx, m, bytes.NewReader(build), "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.app.Cloud.Updates.StartRollout(ctx, cloud.UpdateRolloutRequest{Version: version, Edge: "g/e"}, "test"); err != nil {
		t.Fatal(err)
	}
}

// waitRestart waits for the edge to ask for its restart into the new build.
func (s *updateSite) waitRestart(t *testing.T) {
	t.Helper()
	select {
	case <-s.edge.Restart():
	case <-time.After(30 * time.Second):
		t.Fatalf("no restart; update state %+v", s.edge.UpdateState())
	}
}

// TestEdgeUpdateInstalls: a build assigned to the edge is fetched over its
// MQTT connection, checked and put in place of its binary, the old one
// kept, and the edge asks to restart; the cloud sees each step.
func TestEdgeUpdateInstalls(t *testing.T) {
	pub, priv, _ := release.Keygen()
	s := newUpdateSite(t, pub, pub, 0)
	build, m := signed(t, priv, "1.1.0", 700<<10) // eleven pieces
	s.roll(t, priv, "1.1.0", build, m)
	s.waitRestart(t)
	if got, _ := os.ReadFile(s.exe); !bytes.Equal(got, build) {
		t.Fatal("the new build is not in place")
	}
	if got, _ := os.ReadFile(release.PreviousFile(s.exe)); !bytes.Equal(got, s.old) {
		t.Fatal("the old build is not kept")
	}
	st, _ := release.LoadState(release.StateFile(s.data))
	if st.Step != release.StepRestarting || st.Version != "1.1.0" || st.From != "1.0.0" || st.SHA256 != m.SHA256 {
		t.Fatalf("state on disk: %+v", st)
	}
	if leftover, _ := filepath.Glob(filepath.Join(s.data, "update", "*.part")); len(leftover) != 0 {
		t.Fatalf("download left behind: %v", leftover)
	}
	if n := s.app.Cloud.Updates.Stats().ChunksServed; n < 11 {
		t.Fatalf("%d pieces served", n)
	}
	// The edge reports the step as node metrics; the cloud shows it.
	edgetest.CheckFor(t, 15*time.Second, 100*time.Millisecond, func() error {
		for _, h := range s.app.Cloud.Health.Edges(time.Now()) {
			if h.ID == "g/e" && h.Update != nil && h.Update.Version == "1.1.0" && h.Update.Step == release.StepRestarting {
				return nil
			}
		}
		return fmt.Errorf("update not reported: %+v", s.app.Cloud.Health.Edges(time.Now()))
	})
}

// TestEdgeUpdateRefused: a build signed by another key than the edge pins,
// and a build whose bytes were changed on the cloud's disk, are refused
// before anything is swapped, and the edge says why.
func TestEdgeUpdateRefused(t *testing.T) {
	cloudPub, cloudPriv, _ := release.Keygen()
	edgePub, _, _ := release.Keygen()
	s := newUpdateSite(t, cloudPub, edgePub, 0)
	build, m := signed(t, cloudPriv, "1.1.0", 100<<10)
	s.roll(t, cloudPriv, "1.1.0", build, m)
	refused := func(want string) {
		t.Helper()
		edgetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			if st := s.edge.UpdateState(); st.Step != release.StepRefused || !strings.Contains(st.Error, want) {
				return fmt.Errorf("state %+v", st)
			}
			return nil
		})
		if got, _ := os.ReadFile(s.exe); !bytes.Equal(got, s.old) {
			t.Fatal("a refused build was put in place")
		}
		if _, err := os.Stat(release.PreviousFile(s.exe)); err == nil {
			t.Fatal("a refused build started a swap")
		}
	}
	refused("signed by key " + m.KeyID)

	// The key the edge pins this time, but the bytes the cloud serves are
	// changed on its disk after the upload.
	pub, priv, _ := release.Keygen()
	s = newUpdateSite(t, pub, pub, 0)
	build, m = signed(t, priv, "1.2.0", 100<<10)
	tampered := bytes.Clone(build)
	tampered[50000] ^= 1
	os.WriteFile(filepath.Join(s.releases, m.SHA256), tampered, 0o600)
	s.roll(t, priv, "1.2.0", build, m)
	refused("does not match its manifest")
	// Fetched three times (the edge's own disk might have lost bytes), then
	// refused.
	if st := s.edge.UpdateState(); st.Tries != 2 {
		t.Fatalf("tries %d", st.Tries)
	}
	if n := s.app.Cloud.Updates.Stats().ChunksServed; n != 3*2 {
		t.Fatalf("%d pieces served, want two pieces three times", n)
	}

	// A build refused is not fetched again when the assignment comes
	// again (after a reconnect, as a retained message).
	served := s.app.Cloud.Updates.Stats().ChunksServed
	b, _ := json.Marshal(release.Assignment{Version: "1.2.0", Builds: []release.Manifest{m}})
	if err := s.app.Cloud.Broker.Publish(sparkplug.UpdateTopic("g", "e"), b, true, 1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if now := s.app.Cloud.Updates.Stats().ChunksServed; now != served {
		t.Fatalf("a refused build fetched again: %d pieces", now-served)
	}

	// A manifest whose signature is not the key's (forged by whoever
	// could publish the assignment) is refused before anything is fetched.
	forged := m
	forged.Version = "1.3.0"
	forged.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(priv, []byte("something else")))
	served = s.app.Cloud.Updates.Stats().ChunksServed
	fb, _ := json.Marshal(release.Assignment{Version: "1.3.0", Builds: []release.Manifest{forged}})
	if err := s.app.Cloud.Broker.Publish(sparkplug.UpdateTopic("g", "e"), fb, true, 1); err != nil {
		t.Fatal(err)
	}
	refused("the manifest was changed after it was signed, or the signature is forged")
	if now := s.app.Cloud.Updates.Stats().ChunksServed; now != served {
		t.Fatalf("a forged build fetched: %d pieces", now-served)
	}
}

// TestEdgeUpdateBandwidth: a download goes on from where an earlier one
// stopped (half the build is in the data dir already), and keeps under its
// bandwidth cap.
func TestEdgeUpdateBandwidth(t *testing.T) {
	pub, priv, _ := release.Keygen()
	s := newUpdateSite(t, pub, pub, 128<<10)
	build, m := signed(t, priv, "1.1.0", 1<<20)
	os.MkdirAll(filepath.Join(s.data, "update"), 0o700)
	os.WriteFile(filepath.Join(s.data, "update", m.SHA256+".part"), build[:512<<10], 0o600)
	began := time.Now()
	s.roll(t, priv, "1.1.0", build, m)
	s.waitRestart(t)
	if got, _ := os.ReadFile(s.exe); !bytes.Equal(got, build) {
		t.Fatal("the new build is not in place")
	}
	// The other half, 512 KiB, in pieces of 64 KiB.
	if n := s.app.Cloud.Updates.Stats().ChunksServed; n != 8 {
		t.Fatalf("%d pieces fetched for the half of the build missing, want 8", n)
	}
	// At 128 KiB/s, the first piece free, the other 448 KiB take 3.5 s.
	if took := time.Since(began); took < 3400*time.Millisecond {
		t.Fatalf("512 KiB at a cap of 128 KiB/s took %s", took)
	}
}

// TestEdgeUpdateWaves: a rollout with a canary assigns the rest only once
// the canary runs the release, healthy, for the time asked; each edge's
// restart is the edge started again from its data dir with the new
// version, as the supervisor would.
func TestEdgeUpdateWaves(t *testing.T) {
	pub, priv, _ := release.Keygen()
	dir := t.TempDir()
	hash, _ := cloud.HashPassword("edge-pw")
	var users []cloud.MQTTUser
	for _, id := range []string{"a", "b"} {
		users = append(users, cloud.MQTTUser{Username: id, PasswordHash: hash, Role: cloud.RoleEdge, Group: "g", EdgeID: id})
	}
	app := webtest.Start(t, cloud.Options{DataDir: filepath.Join(dir, "cloud"), ReleaseKey: pub, MQTT: cloud.BrokerOptions{Listen: "127.0.0.1:0", Users: users}})
	start := func(id, version string) *edge.Edge {
		t.Helper()
		exe := filepath.Join(dir, id, "bin", "calx")
		if _, err := os.Stat(exe); err != nil {
			os.MkdirAll(filepath.Dir(exe), 0o755)
			os.WriteFile(exe, []byte("build 1.0.0"), 0o755)
		}
		kiln, _ := sim.New("k", sim.Settings{Interval: 50 * time.Millisecond, StartHot: true})
		e, err := edge.New(edge.Options{Broker: "tcp://" + app.Cloud.Broker.Addr(), Username: id, Password: "edge-pw", Group: "g", EdgeID: id,
			PrimaryHost: "calx", DataDir: filepath.Join(dir, id, "data"), Version: version,
			Updates: edge.UpdateOptions{PublicKey: pub, Executable: exe},
			Devices: []edge.Device{{ID: "kiln", Path: uns.Path("ent/site/area/" + id + "/kiln"), Connector: kiln}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Shutdown(context.Background()) })
		return e
	}
	restart := func(e *edge.Edge, id string) *edge.Edge {
		t.Helper()
		select {
		case <-e.Restart():
		case <-time.After(30 * time.Second):
			t.Fatalf("%s took no release: %+v", id, e.UpdateState())
		}
		if err := e.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		return start(id, "1.1.0 (abc)")
	}
	a, b := start("a", "1.0.0 (abc)"), start("b", "1.0.0 (abc)")
	edgetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if len(app.Cloud.Health.Edges(time.Now())) != 2 || !a.Online() || !b.Online() {
			return fmt.Errorf("edges not born")
		}
		return nil
	})
	build, m := signed(t, priv, "1.1.0", 200<<10)
	ctx := context.Background()
	if _, err := app.Cloud.Updates.Upload(ctx, m, bytes.NewReader(build), "test"); err != nil {
		t.Fatal(err)
	}
	ro, err := app.Cloud.Updates.StartRollout(ctx, cloud.UpdateRolloutRequest{Version: "1.1.0", All: true, Canary: []string{"g/a"}, HealthyFor: "3s"}, "test")
	if err != nil {
		t.Fatal(err)
	}
	a = restart(a, "a")
	edgetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		if st := a.UpdateState(); st.Step != release.StepHealthy {
			return fmt.Errorf("canary: %+v", st)
		}
		return nil
	})
	healthy := time.Now()
	// The rest waits for the canary to hold.
	select {
	case <-b.Restart():
		if held := time.Since(healthy); held < 2*time.Second {
			t.Fatalf("the rest took the release %s after the canary was healthy, before it held for 3 s", held)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the rest never got the release: %+v", b.UpdateState())
	}
	b = restart(b, "b")
	edgetest.CheckFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		r, err := app.Cloud.Updates.Rollout(ctx, ro.ID)
		if err != nil || r.State != cloud.RolloutDone {
			return fmt.Errorf("rollout %+v %v", r, err)
		}
		return nil
	})
	for _, e := range []*edge.Edge{a, b} {
		if st := e.UpdateState(); st.Step != release.StepHealthy || st.From != "1.0.0" {
			t.Errorf("update state %+v", st)
		}
	}
}
