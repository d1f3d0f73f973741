package release

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Steps of an update, as an edge reports them.
const (
	StepDownloading = "downloading"
	StepVerifying   = "verifying"
	StepRestarting  = "restarting" // the new binary is in place; the process restarts into it
	StepTrial       = "trial"      // the new binary runs and has its health window to prove itself
	StepHealthy     = "healthy"    // it connected, was born and sent data in time
	StepRolledBack  = "rolled back"
	StepRefused     = "refused" // the build failed its checks; nothing was swapped
	StepFailed      = "failed"  // the download or the swap failed; tried again later
)

// State is an edge's update, kept in its data dir across restarts: what
// it is trying, how far it got, and why it stopped. The edge and its
// supervisor both write it, one at a time (the supervisor only while the
// edge process is not running or at its trial's end).
type State struct {
	Version string  `json:"version"` // the release being tried
	SHA256  string  `json:"sha256"`  // of this platform's build
	From    string  `json:"from"`    // the version running before
	Rollout string  `json:"rollout,omitempty"`
	Step    string  `json:"step"`
	Percent float64 `json:"percent,omitempty"` // of the download
	Error   string  `json:"error,omitempty"`
	// TrialSince is when the new binary was started; Window is how long
	// it has to become healthy.
	TrialSince time.Time     `json:"trial_since,omitzero"`
	Window     time.Duration `json:"window,omitempty"`
	// Health is what the binary on trial still lacks to be healthy.
	Health string `json:"health,omitempty"`
	// Tries counts the downloads whose bytes did not match.
	Tries int       `json:"tries,omitempty"`
	At    time.Time `json:"at"`
}

// StateFile is where an edge with data dir dir keeps its State.
func StateFile(dir string) string { return filepath.Join(dir, "update", "state.json") }

// LoadState reads a State; a missing file is the zero State.
func LoadState(file string) (State, error) {
	var s State
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("release: update state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("release: update state %s: %w", file, err)
	}
	return s, nil
}

// SaveState writes a State whole or not at all.
func SaveState(file string, s State) error {
	s.At = time.Now().UTC()
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("release: update state: %w", err)
	}
	return writeAtomic(file, b, 0o600)
}

// writeAtomic writes a file through a temporary one in its directory,
// synced, and renamed over it.
func writeAtomic(file string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(file), filepath.Base(file)+".*.tmp")
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err == nil {
		err = syncDir(filepath.Dir(file))
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("release: %s: %w", file, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// The files beside the running binary exe while it is swapped: the new one
// being written, the one it replaces, and the previous one being put back.
func newFile(exe string) string      { return exe + ".new" }
func PreviousFile(exe string) string { return exe + ".previous" }
func backFile(exe string) string     { return exe + ".rollback" }

// Install puts the checked build staged in place of the binary exe,
// keeping exe as PreviousFile(exe). Every step leaves exe a whole binary,
// the old or the new one, whatever moment the process or the power stops:
// the new binary is written and synced beside exe, the old one linked to
// its previous name, and the new one renamed over exe.
func Install(exe, staged string) error {
	for _, step := range installSteps(exe, staged) {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// installSteps are Install's steps, each an atomic change of the directory
// or a change of a file no one runs.
func installSteps(exe, staged string) []func() error {
	dir := filepath.Dir(exe)
	return []func() error{
		func() error { return copyFile(staged, newFile(exe), 0o755) },
		func() error { return replaceLink(exe, PreviousFile(exe)) },
		func() error {
			if err := os.Rename(newFile(exe), exe); err != nil {
				return fmt.Errorf("release: install: %w", err)
			}
			return syncDir(dir)
		},
	}
}

// Restore puts the previous binary back in place of exe, keeping it as
// the previous one too.
func Restore(exe string) error {
	if _, err := os.Stat(PreviousFile(exe)); err != nil {
		return fmt.Errorf("release: no previous binary to go back to: %w", err)
	}
	if err := replaceLink(PreviousFile(exe), backFile(exe)); err != nil {
		return err
	}
	if err := os.Rename(backFile(exe), exe); err != nil {
		return fmt.Errorf("release: restore: %w", err)
	}
	return syncDir(filepath.Dir(exe))
}

// Tidy removes what an install or a restore cut short left beside exe.
func Tidy(exe string) {
	os.Remove(newFile(exe))
	os.Remove(backFile(exe))
}

// replaceLink makes dst a hard link of src (a copy where the file system
// takes no links), replacing dst.
func replaceLink(src, dst string) error {
	tmp := dst + ".tmp"
	os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		if err := copyFile(src, tmp, 0o755); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("release: %w", err)
	}
	return syncDir(filepath.Dir(dst))
}

// copyFile copies src to dst, synced, with mode.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("release: %w", err)
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(dst, mode)
	}
	if err != nil {
		os.Remove(dst)
		return fmt.Errorf("release: %s: %w", dst, err)
	}
	return nil
}
