package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/calx-iiot/calx/release"
)

// exitRestart is the code an edge exits with to be started again by its
// supervisor, into a new binary or the previous one.
const exitRestart = 75

// errRestart makes `calx edge` exit with exitRestart.
var errRestart = errors.New("restarting for an update")

// envSupervised tells an edge process that a supervisor runs it.
const envSupervised = "CALX_SUPERVISED"

// supervisor runs `calx edge` as a child process where no service manager
// restarts it: it starts the child again when it exits, and judges a new
// binary's trial. A child on trial that exits, or is not healthy (it says
// so in the update state) within its window, is stopped, the previous
// binary put back, and that started instead, with the cause kept in the
// update state for the edge to report.
type supervisor struct {
	exe, stateFile string
	args           []string // of the child: `edge` and the flags without --supervise
	window         time.Duration
	log            *slog.Logger
	stdout, stderr io.Writer
}

// withoutSupervise drops the --supervise flag from edge's arguments.
func withoutSupervise(args []string) []string {
	return slices.DeleteFunc(slices.Clone(args), func(a string) bool {
		a = strings.TrimLeft(a, "-")
		return a == "supervise" || strings.HasPrefix(a, "supervise=")
	})
}

func (s *supervisor) run(ctx context.Context) error {
	backoff := time.Second
	for first := true; ; first = false {
		st, err := release.LoadState(s.stateFile)
		if err != nil {
			s.log.Error("update state not read", "err", err)
		}
		if first && st.Step == release.StepTrial {
			// The machine restarted during a trial: its window starts anew.
			st.TrialSince = time.Now().UTC()
			if err := release.SaveState(s.stateFile, st); err != nil {
				s.log.Error("update state not saved", "err", err)
			}
		}
		if st.Step == release.StepRestarting {
			// The new build is in place unless the edge stopped (or the
			// power went) before the swap ended: then the binary in place
			// is the old one, whole, and the edge tries the update again.
			if sum, _, err := release.Describe(s.exe); err != nil || sum != st.SHA256 {
				st.Step, st.Error = release.StepFailed, "the update stopped before the new binary was in place; it is tried again"
			} else {
				st.Step, st.TrialSince, st.Window = release.StepTrial, time.Now().UTC(), s.window
			}
			if err := release.SaveState(s.stateFile, st); err != nil {
				s.log.Error("update state not saved", "err", err)
			}
		}
		trial := st.Step == release.StepTrial
		began := time.Now()
		code, stopped, cause := s.once(ctx, st, trial)
		switch {
		case stopped:
			return nil
		case cause != "":
			if !s.rollback(st, cause) {
				// Nothing to go back to: the build in place runs on, after
				// a pause, rather than in a loop of trials.
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 30*time.Second)
			}
		case code == exitRestart:
			backoff = time.Second
		case code == 2:
			return fmt.Errorf("the edge exited with a usage error (code 2): not started again")
		default:
			if time.Since(began) > time.Minute {
				backoff = time.Second
			}
			s.log.Warn("edge exited; starting it again", "code", code, "in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
		}
	}
}

// once runs the child until it exits or ctx ends (stopped); on trial, it
// gives the cause of a failed trial.
func (s *supervisor) once(ctx context.Context, st release.State, trial bool) (code int, stopped bool, cause string) {
	cmd := exec.Command(s.exe, s.args...)
	cmd.Env = append(os.Environ(), envSupervised+"=1")
	cmd.Stdout, cmd.Stderr = s.stdout, s.stderr
	cmd.SysProcAttr = childAttr()
	began := time.Now()
	if err := cmd.Start(); err != nil {
		if trial {
			return 0, false, fmt.Sprintf("the new binary does not start: %v", err)
		}
		s.log.Error("edge not started", "err", err)
		return 1, false, ""
	}
	s.log.Info("edge started", "pid", cmd.Process.Pid, "trial", trial)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var window <-chan time.Time
	poll := time.NewTicker(250 * time.Millisecond)
	defer poll.Stop()
	if trial {
		window = time.After(time.Until(st.TrialSince.Add(st.Window)))
	}
	for {
		select {
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
			s.wait(cmd, done)
			return 0, true, ""
		case err := <-done:
			code := exitCode(err)
			if trial && code != exitRestart {
				return code, false, fmt.Sprintf("the new binary exited (%s) %s after it started", describeExit(err), time.Since(began).Round(time.Millisecond))
			}
			return code, false, ""
		case <-poll.C:
			if !trial {
				continue
			}
			if now, err := release.LoadState(s.stateFile); err == nil && now.Step == release.StepHealthy {
				trial, window = false, nil
				s.log.Info("update healthy", "version", now.Version)
			}
		case <-window:
			now, _ := release.LoadState(s.stateFile)
			cause := fmt.Sprintf("not healthy within %s", st.Window)
			if now.Health != "" {
				cause += ": " + now.Health
			}
			cmd.Process.Signal(syscall.SIGTERM)
			s.wait(cmd, done)
			return 0, false, cause
		}
	}
}

// wait waits for the child to stop, killing it after 15 s.
func (s *supervisor) wait(cmd *exec.Cmd, done <-chan error) {
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// rollback puts the previous binary back and records why; false when
// there was none to put back (the state says so, and the trial ends).
func (s *supervisor) rollback(st release.State, cause string) bool {
	if now, err := release.LoadState(s.stateFile); err == nil && now.Version == st.Version {
		st = now
	}
	st.Health = ""
	if err := release.Restore(s.exe); err != nil {
		st.Step, st.Error = release.StepFailed, cause+"; the previous binary cannot be put back: "+err.Error()
		s.log.Error("update failed its trial and the previous binary cannot be put back", "cause", cause, "err", err)
	} else {
		st.Step, st.Error = release.StepRolledBack, cause
		s.log.Error("update rolled back; starting the previous binary", "version", st.Version, "cause", cause)
	}
	if err := release.SaveState(s.stateFile, st); err != nil {
		s.log.Error("update state not saved", "err", err)
	}
	return st.Step == release.StepRolledBack
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return 1
	}
	return 0
}

func describeExit(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return fmt.Sprintf("status %d", ee.ExitCode())
	}
	if err != nil {
		return err.Error()
	}
	return "status 0"
}
