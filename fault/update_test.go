//go:build linux

package fault

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/release"
)

// buildCalx links calx again with another version.
func buildCalx(t *testing.T, dir, version string) string {
	t.Helper()
	binary(t) // the packages are compiled once
	out := filepath.Join(dir, "calx-"+version)
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", out, ".")
	cmd.Dir = ".."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", version, err, b)
	}
	return out
}

// buildProgram builds a small Go program: a release that is not a working
// edge.
func buildProgram(t *testing.T, dir, name, src string) string {
	t.Helper()
	srcDir := filepath.Join(dir, name+"-src")
	os.MkdirAll(srcDir, 0o755)
	os.WriteFile(filepath.Join(srcDir, "main.go"), []byte(src), 0o644)
	os.WriteFile(filepath.Join(srcDir, "go.mod"), []byte("module "+name+"\n\ngo 1.26\n"), 0o644)
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = srcDir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, b)
	}
	return out
}

// sign makes a build's manifest.
func sign(t *testing.T, priv ed25519.PrivateKey, file, version string) release.Manifest {
	t.Helper()
	sum, size, err := release.Describe(file)
	if err != nil {
		t.Fatal(err)
	}
	m := release.Manifest{Version: version, OS: runtime.GOOS, Arch: runtime.GOARCH, SHA256: sum, Size: size}
	if err := release.Sign(priv, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// upload posts a signed build to the cloud.
func (c *client) upload(t *testing.T, m release.Manifest, file string) {
	t.Helper()
	if err := c.do("GET", "/api/v1/releases", nil, nil); err != nil { // signs in
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	w := multipart.NewWriter(pw)
	go func() {
		mb, _ := json.Marshal(m)
		part, _ := w.CreateFormFile("manifest", "manifest.json")
		part.Write(mb)
		part, _ = w.CreateFormFile("binary", filepath.Base(file))
		f, err := os.Open(file)
		if err == nil {
			_, err = f.WriteTo(part)
			f.Close()
		}
		if err == nil {
			err = w.Close()
		}
		pw.CloseWithError(err)
	}()
	req, _ := http.NewRequest("POST", "http://"+c.addr+"/api/v1/releases", pr)
	req.Header.Set("Content-Type", w.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+c.token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out bytes.Buffer
	out.ReadFrom(res.Body)
	if res.StatusCode != 201 {
		t.Fatalf("upload %s: %d %s", m.Version, res.StatusCode, out.String())
	}
}

// rollout is an update rollout as the API shows it.
type rollout struct {
	Rollout struct {
		ID, State, Reason string
	}
	Edges []struct {
		Edge, Running, Step, Error, State string
	}
}

// roll rolls a release out to the fault edge and waits for the rollout to
// end; it returns the rollout and how long it took.
func (s *site) roll(t *testing.T, version string, timeout time.Duration) (rollout, time.Duration) {
	t.Helper()
	began := time.Now()
	var ro rollout
	body, _ := json.Marshal(map[string]any{"version": version, "edge": "limeworks/fault-edge", "healthy_for": "2s", "timeout": timeout.String()})
	if err := s.api.do("POST", "/api/v1/releases/rollouts", body, &ro); err != nil {
		t.Fatal(err)
	}
	checkFor(t, timeout+30*time.Second, 250*time.Millisecond, func() error {
		if err := s.api.do("GET", "/api/v1/releases/rollouts/"+ro.Rollout.ID, nil, &ro); err != nil {
			return err
		}
		if ro.Rollout.State == "running" {
			return fmt.Errorf("rollout running: %+v", ro.Edges)
		}
		return nil
	})
	return ro, time.Since(began)
}

// edgeUpdate is the fault edge as GET /api/v1/edges shows it.
func (s *site) edgeUpdate(t *testing.T) (version string, upd map[string]any) {
	t.Helper()
	var e struct {
		Version string         `json:"version"`
		Update  map[string]any `json:"update"`
	}
	if err := s.api.do("GET", "/api/v1/edges/limeworks/fault-edge", nil, &e); err != nil {
		t.Fatal(err)
	}
	return release.VersionOf(e.Version), e.Update
}

// TestEdgeUpdates updates a running edge from the cloud, as processes: a
// good build goes in and every value sampled meanwhile arrives; a build
// that exits at start and one that never sends data are rolled back within
// the health window, and the rollouts say why. Then an edge without a
// supervisor updates itself by executing the new binary.
func TestEdgeUpdates(t *testing.T) {
	dir := t.TempDir()
	pub, priv, _ := release.Keygen()
	newBuild := buildCalx(t, dir, "2.0.0-test")
	crash := buildProgram(t, dir, "crash", "package main\n\nimport \"os\"\n\nfunc main() { os.Exit(3) }\n")
	mute := buildProgram(t, dir, "mute", `package main

import (
	"os"
	"os/signal"
	"syscall"
)

// Runs and says nothing until it is stopped.
func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, os.Interrupt)
	<-c
}
`)
	builds := map[string]string{"2.0.0-test": newBuild, "2.0.1-crash": crash, "2.0.2-mute": mute}

	s := newSite(t, 0, 0)
	// The edge runs from a binary of its own, under its supervisor, with a
	// health window of 8 s; cloud and edge trust the key.
	exe := filepath.Join(dir, "bin", "calx")
	os.MkdirAll(filepath.Dir(exe), 0o755)
	old, _ := os.ReadFile(binary(t))
	os.WriteFile(exe, old, 0o755)
	key := release.FormatPublicKey(pub)
	appendTo(t, s.cloud.args[2], fmt.Sprintf("updates: {public_key: '%s'}\n", key))
	appendTo(t, s.edge.args[2], fmt.Sprintf("updates: {public_key: '%s', health_window: 8s}\n", key))
	s.edge.bin = exe
	s.edge.args = append([]string{"edge", "--supervise"}, s.edge.args[1:]...)

	since := time.Now()
	s.startCloud()
	s.edge.start()
	first := s.firstValue(t, since)
	for v, file := range builds {
		s.api.upload(t, sign(t, priv, file, v), file)
	}

	// A good build.
	began := time.Now()
	ro, took := s.roll(t, "2.0.0-test", 2*time.Minute)
	if ro.Rollout.State != "done" {
		t.Fatalf("good build: rollout %+v\nedge output:\n%s", ro, s.edge.output())
	}
	version, upd := s.edgeUpdate(t)
	if version != "2.0.0-test" || upd["step"] != release.StepHealthy {
		t.Fatalf("good build: edge reports version %q, update %v", version, upd)
	}
	if b, _ := os.ReadFile(exe); !bytes.Equal(b, mustRead(t, newBuild)) {
		t.Fatal("good build: not in place")
	}
	if b, _ := os.ReadFile(release.PreviousFile(exe)); !bytes.Equal(b, old) {
		t.Fatal("good build: the old binary not kept")
	}
	t.Logf("good build of %d MB: rolled out and healthy for 2 s in %s", len(mustRead(t, newBuild))>>20, took.Round(100*time.Millisecond))
	// Every value sampled before and after the restart arrives once; the
	// steps missing are those of the restart alone (the clock reads none
	// while no edge process runs), in one run.
	end := step(time.Now())
	excused := [][2]int64{{step(began), step(time.Now())}}
	s.settle(t, "update", []string{s.counterPath}, first, end, excused, since, 2*time.Minute)
	vals, err := s.values(s.counterPath, since)
	if err != nil {
		t.Fatal(err)
	}
	gap := missingRuns(vals, step(began), end)
	if len(gap) > 1 || len(gap) == 1 && gap[0][1]-gap[0][0] >= 30 {
		t.Fatalf("steps missing across the update, want at most one run, of the restart (under 3 s): %v", gap)
	}
	missed := int64(0)
	if len(gap) == 1 {
		missed = gap[0][1] - gap[0][0] + 1
	}
	t.Logf("good build: every value read arrived; the clock missed %d steps of 100 ms while the edge restarted", missed)

	// A build that exits at start: back to 2.0.0-test at once.
	ro, took = s.roll(t, "2.0.1-crash", time.Minute)
	if ro.Rollout.State != "failed" || !strings.Contains(ro.Rollout.Reason, "rolled back: the new binary exited (status 3)") {
		t.Fatalf("crashing build: rollout %+v", ro)
	}
	if took > 30*time.Second {
		t.Fatalf("crashing build: rolled back in %s", took)
	}
	if version, upd = s.edgeUpdate(t); version != "2.0.0-test" || upd["step"] != release.StepRolledBack {
		t.Fatalf("crashing build: edge reports %q, update %v", version, upd)
	}
	if b, _ := os.ReadFile(exe); !bytes.Equal(b, mustRead(t, newBuild)) {
		t.Fatal("crashing build: the previous binary not back")
	}
	t.Logf("build exiting at start: rolled back, rollout stopped in %s: %s", took.Round(100*time.Millisecond), ro.Rollout.Reason)

	// A build that runs and never sends data: back when its window ends.
	ro, took = s.roll(t, "2.0.2-mute", time.Minute)
	if ro.Rollout.State != "failed" || !strings.Contains(ro.Rollout.Reason, "rolled back: not healthy within 8s") {
		t.Fatalf("mute build: rollout %+v", ro)
	}
	if version, _ = s.edgeUpdate(t); version != "2.0.0-test" {
		t.Fatalf("mute build: edge reports %q", version)
	}
	if b, _ := os.ReadFile(exe); !bytes.Equal(b, mustRead(t, newBuild)) {
		t.Fatal("mute build: the previous binary not back")
	}
	t.Logf("build that never sends data: rolled back, rollout stopped in %s: %s", took.Round(100*time.Millisecond), ro.Rollout.Reason)
	s.edge.stop()

	// Without a supervisor: the edge executes the new binary in its own
	// process, and judges its trial itself.
	os.WriteFile(exe, old, 0o755)
	os.Remove(release.StateFile(filepath.Join(s.dir, "edge")))
	s.edge.args = append([]string{"edge"}, s.edge.args[2:]...)
	s.edge.start()
	pid := s.edge.cmd.Process.Pid
	ro, _ = s.roll(t, "2.0.0-test", 2*time.Minute)
	if ro.Rollout.State != "done" {
		t.Fatalf("unsupervised: rollout %+v\nedge output:\n%s", ro, s.edge.output())
	}
	if version, upd = s.edgeUpdate(t); version != "2.0.0-test" || upd["step"] != release.StepHealthy {
		t.Fatalf("unsupervised: edge reports %q, update %v", version, upd)
	}
	if s.edge.cmd.ProcessState != nil {
		t.Fatalf("unsupervised: the edge process ended: %v", s.edge.cmd.ProcessState)
	}
	// The same process runs the new binary.
	if running, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); running != exe {
		t.Fatalf("unsupervised: process %d runs %q", pid, running)
	}
}

func appendTo(t *testing.T, file, text string) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// missingRuns returns the runs of steps from first to last not in vals.
func missingRuns(vals []int64, first, last int64) [][2]int64 {
	seen := map[int64]bool{}
	for _, v := range vals {
		seen[v] = true
	}
	var runs [][2]int64
	for v := first; v <= last; v++ {
		if seen[v] {
			continue
		}
		if n := len(runs); n > 0 && runs[n-1][1] == v-1 {
			runs[n-1][1] = v
		} else {
			runs = append(runs, [2]int64{v, v})
		}
	}
	return runs
}
