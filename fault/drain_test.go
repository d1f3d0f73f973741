//go:build linux

package fault

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
)

// TestSIGTERMDrainsBacklog: calx cloud gets SIGTERM while its backbone
// holds UNS values the historian has not written yet. It exits 0 within
// its shutdown deadline, its log says the drain finished (not that it
// timed out, as it did when the signal stopped the archiver before the
// drain), and after a restart the historian holds every value exactly
// once.
func TestSIGTERMDrainsBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("fault tests run the real binary; skipped with -short")
	}
	const (
		tags     = 20
		perMsg   = 500
		msgs     = 1000 // 500,000 values
		deadline = 4 * time.Second
	)
	dir := t.TempDir()
	s := &site{t: t, dir: dir, httpAddr: freeAddr(t)}
	s.api.addr = s.httpAddr
	natsAddr := freeAddr(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("loader-pw"), bcrypt.MinCost)
	cfg := filepath.Join(dir, "cloud.yaml")
	yaml := fmt.Sprintf(`data_dir: %s
http: {listen: %s}
mqtt: {listen: %s}
nats:
  listen: %s
  users:
    - {username: loader, password_hash: '%s', publish: ['calx.uns.>'], subscribe: ['_INBOX.>']}
`, filepath.Join(dir, "cloud"), s.httpAddr, freeAddr(t), natsAddr, hash)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	s.cloud = &proc{t: t, args: []string{"cloud", "--config", cfg, "--log-level", "info", "--log-format", "json"}}
	t.Cleanup(func() {
		if s.cloud.cmd != nil && s.cloud.cmd.ProcessState == nil {
			s.cloud.stop()
		}
		if t.Failed() {
			t.Logf("cloud output:\n%s", s.cloud.output())
		}
	})
	s.startCloud()

	// The backlog: UNS batches put straight into the backbone's UNS
	// stream, each stored before the signal. The historian may keep up
	// with the loader on a quiet machine and leave no backlog at the
	// signal: then the cloud starts again and a larger backlog comes.
	start := time.Now().Add(-time.Hour).Truncate(time.Second)
	sent := 0 // messages
	var buf []byte
	samples := make([]uns.Sample, perMsg)
	load := func(count int) {
		nc, err := nats.Connect("nats://"+natsAddr, nats.UserInfo("loader", "loader-pw"))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		for m := sent; m < sent+count; m++ {
			for i := range samples {
				n := m*perMsg + i
				samples[i] = uns.Sample{Path: uns.Path(fmt.Sprintf("limeworks/drain/area/line/m/t%02d", n%tags)),
					TS: start.Add(time.Duration(n/tags) * time.Millisecond), Value: uns.Int(int64(n / tags)), Quality: uns.Good}
			}
			buf = uns.AppendBatch(buf[:0], samples)
			if _, err := js.PublishAsync(store.SubjectUNS+".limeworks.drain", append([]byte(nil), buf...)); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			t.Fatal("backlog not stored in 30 s")
		}
		sent += count
	}
	for attempt := 1; ; attempt++ {
		load(msgs * attempt)
		began := time.Now()
		if err := s.cloud.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- s.cloud.cmd.Wait() }()
		var exitErr error
		select {
		case exitErr = <-exited:
		case <-time.After(deadline + 5*time.Second):
			t.Fatalf("calx cloud still running %s after SIGTERM", deadline+5*time.Second)
		}
		took := time.Since(began)
		if exitErr != nil {
			var ee *exec.ExitError
			if errors.As(exitErr, &ee) {
				t.Fatalf("calx cloud exited with %d after SIGTERM", ee.ExitCode())
			}
			t.Fatal(exitErr)
		}
		if took > deadline+time.Second {
			t.Errorf("stopped in %s; its shutdown deadline is %s", took, deadline)
		}
		backlog, ok := drainLine(s.cloud.output())
		if !ok {
			t.Fatal(`the log does not say "drain finished"`)
		}
		if backlog > 0 {
			t.Logf("SIGTERM with %d UNS messages not yet in the historian: stopped in %s", backlog, took.Round(time.Millisecond))
			break
		}
		if attempt == 3 {
			t.Fatal("the historian had written everything before each of three signals: no backlog was drained")
		}
		t.Logf("no backlog at the signal (the historian kept up with %d messages): again with more", msgs*attempt)
		s.startCloud()
	}

	// After a restart every value is there exactly once.
	s.startCloud()
	var res struct {
		Rows [][]any `json:"rows"`
	}
	q := `SELECT count(*), count(DISTINCT (t.path, p.ts)) FROM points p JOIN tags t ON t.id = p.tag_id WHERE t.path LIKE 'limeworks/drain/%'`
	body, _ := json.Marshal(map[string]any{"query": q})
	if err := s.api.do("POST", "/api/v1/sql", body, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 2 {
		t.Fatalf("rows %v", res.Rows)
	}
	total, distinct := res.Rows[0][0].(float64), res.Rows[0][1].(float64)
	if want := float64(sent * perMsg); total != want || distinct != want {
		t.Fatalf("historian holds %v values (%v distinct) of %v", total, distinct, want)
	}
}

// drainLine finds the cloud's "drain finished" log line and the backlog
// it drained.
func drainLine(out string) (uint64, bool) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l struct {
			Msg     string `json:"msg"`
			Backlog uint64 `json:"backlog_msgs"`
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && strings.HasPrefix(l.Msg, "drain finished") {
			return l.Backlog, true
		}
	}
	return 0, false
}
