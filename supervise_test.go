//go:build linux

package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/calx-iiot/calx/release"
)

// A child of the supervisor in these tests is this test binary with a mode
// appended to its file (an ELF file runs with bytes after its end):
// "sleep" runs until stopped, "healthy" first says so in the update state.
func TestMain(m *testing.M) {
	if state := os.Getenv("CALX_TEST_SUPERVISED_STATE"); state != "" && os.Getenv(envSupervised) != "" {
		exe, _ := os.Executable()
		b, _ := os.ReadFile(exe)
		if bytes.HasSuffix(b, []byte("MODE:healthy")) {
			st, _ := release.LoadState(state)
			st.Step = release.StepHealthy
			release.SaveState(state, st)
		}
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		<-c
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// supervised is a supervisor over a build of mode in place, the previous
// build of mode "sleep", and an update state.
func supervised(t *testing.T, mode string, st release.State) (*supervisor, []byte, []byte) {
	t.Helper()
	dir := t.TempDir()
	self, _ := os.Executable()
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "calx")
	cur, prev := append(bytes.Clone(b), "MODE:"+mode...), append(bytes.Clone(b), "MODE:sleep"...)
	os.WriteFile(exe, cur, 0o755)
	os.WriteFile(release.PreviousFile(exe), prev, 0o755)
	file := release.StateFile(filepath.Join(dir, "data"))
	if st.SHA256 == "" {
		st.SHA256, _, _ = release.Describe(exe)
	}
	if err := release.SaveState(file, st); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CALX_TEST_SUPERVISED_STATE", file)
	return &supervisor{exe: exe, stateFile: file, window: time.Second, log: slog.New(slog.DiscardHandler), stdout: io.Discard, stderr: io.Discard}, cur, prev
}

// runFor runs the supervisor for d and returns the update state then.
func runFor(t *testing.T, s *supervisor, d time.Duration) release.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := s.run(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := release.LoadState(s.stateFile)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSupervisorTrial(t *testing.T) {
	restarting := release.State{Version: "2.0.0", From: "1.0.0", Step: release.StepRestarting}

	// A new build that says it is healthy stays.
	s, cur, _ := supervised(t, "healthy", restarting)
	if st := runFor(t, s, 2500*time.Millisecond); st.Step != release.StepHealthy {
		t.Fatalf("healthy build: state %+v", st)
	}
	if b, _ := os.ReadFile(s.exe); !bytes.Equal(b, cur) {
		t.Fatal("healthy build: not in place")
	}

	// One that says nothing goes when its window of a second ends.
	s, _, prev := supervised(t, "sleep-new", restarting)
	if st := runFor(t, s, 2500*time.Millisecond); st.Step != release.StepRolledBack || !strings.Contains(st.Error, "not healthy within 1s") {
		t.Fatalf("mute build: state %+v", st)
	}
	if b, _ := os.ReadFile(s.exe); !bytes.Equal(b, prev) {
		t.Fatal("mute build: the previous binary is not back")
	}

	// The power went before the swap ended: the binary in place is not
	// the new build; it stays, and the update is tried again, not rolled
	// back to an older binary still.
	cut := restarting
	cut.SHA256 = strings.Repeat("ab", 32)
	s, cur, _ = supervised(t, "sleep-old", cut)
	if st := runFor(t, s, 2000*time.Millisecond); st.Step != release.StepFailed || !strings.Contains(st.Error, "tried again") {
		t.Fatalf("cut update: state %+v", st)
	}
	if b, _ := os.ReadFile(s.exe); !bytes.Equal(b, cur) {
		t.Fatal("cut update: the binary in place was changed")
	}
}

func TestWithoutSupervise(t *testing.T) {
	got := withoutSupervise([]string{"--config", "e.yaml", "--supervise", "-supervise=true", "--log-level", "warn"})
	if strings.Join(got, " ") != "--config e.yaml --log-level warn" {
		t.Fatalf("%q", got)
	}
}
