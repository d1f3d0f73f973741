package release

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// build writes a file of n bytes filled with b and signs its manifest.
func build(t *testing.T, priv ed25519.PrivateKey, dir, version string, n int, b byte) (string, Manifest) {
	t.Helper()
	file := filepath.Join(dir, "calx-"+version)
	if err := os.WriteFile(file, bytes.Repeat([]byte{b}, n), 0o755); err != nil {
		t.Fatal(err)
	}
	sum, size, err := Describe(file)
	if err != nil {
		t.Fatal(err)
	}
	m := Manifest{Version: version, OS: "linux", Arch: "amd64", SHA256: sum, Size: size, Notes: "fixes"}
	if err := Sign(priv, &m); err != nil {
		t.Fatal(err)
	}
	return file, m
}

func TestSignAndCheck(t *testing.T) {
	pub, priv, _ := Keygen()
	other, otherPriv, _ := Keygen()
	dir := t.TempDir()
	file, m := build(t, priv, dir, "1.2.0", 4096, 7)
	if err := Check(pub, m, file); err != nil {
		t.Fatalf("a good build refused: %v", err)
	}
	// Keys survive their text form.
	p2, err := ParsePublicKey(FormatPublicKey(pub))
	if err != nil || !p2.Equal(pub) {
		t.Fatalf("public key text: %v", err)
	}
	k2, err := ParsePrivateKey(FormatPrivateKey(priv))
	if err != nil || !k2.Equal(priv) {
		t.Fatalf("private key text: %v", err)
	}
	if _, err := ParsePublicKey(FormatPrivateKey(priv)); err == nil {
		t.Fatal("a private key taken for a public one")
	}

	// A byte changed in the binary.
	b, _ := os.ReadFile(file)
	b[100] ^= 1
	tampered := filepath.Join(dir, "tampered")
	os.WriteFile(tampered, b, 0o755)
	if err := Check(pub, m, tampered); !errors.Is(err, ErrTampered) {
		t.Fatalf("tampered binary: %v", err)
	}
	// The same binary, longer.
	os.WriteFile(tampered, append(b, 0), 0o755)
	if err := Check(pub, m, tampered); !errors.Is(err, ErrTampered) {
		t.Fatalf("longer binary: %v", err)
	}
	// A manifest changed after signing: its checksum swapped for the
	// tampered binary's, or its version.
	for _, change := range []func(*Manifest){
		func(m *Manifest) { m.SHA256 = strings.Repeat("ab", 32) },
		func(m *Manifest) { m.Version = "9.9.9" },
		func(m *Manifest) { m.Notes = "other notes" },
		func(m *Manifest) { m.Signature = m.Signature[:10] },
	} {
		bad := m
		change(&bad)
		if err := Verify(pub, bad); !errors.Is(err, ErrSignature) {
			t.Fatalf("changed manifest %+v: %v", bad, err)
		}
	}
	// Signed by another key: refused, and named.
	_, om := build(t, otherPriv, dir, "1.2.1", 4096, 7)
	err = Verify(pub, om)
	if !errors.Is(err, ErrSignature) || !strings.Contains(err.Error(), KeyID(other)) || !strings.Contains(err.Error(), KeyID(pub)) {
		t.Fatalf("another key's signature: %v", err)
	}
	if err := Verify(other, om); err != nil {
		t.Fatal(err)
	}
	// Bad fields.
	if err := Sign(priv, &Manifest{Version: "1 0", OS: "linux", Arch: "amd64", SHA256: m.SHA256, Size: 1}); !errors.Is(err, ErrManifest) {
		t.Fatalf("bad version signed: %v", err)
	}
}

// installFixture is a running binary "calx" (old) and a staged new build.
func installFixture(t *testing.T) (exe, staged string, old, nw []byte) {
	dir := t.TempDir()
	exe, staged = filepath.Join(dir, "bin", "calx"), filepath.Join(dir, "staged")
	os.MkdirAll(filepath.Dir(exe), 0o755)
	old, nw = bytes.Repeat([]byte("old "), 1<<18), bytes.Repeat([]byte("new!"), 1<<18)
	os.WriteFile(exe, old, 0o755)
	os.WriteFile(staged, nw, 0o600)
	return exe, staged, old, nw
}

func TestInstallAndRestore(t *testing.T) {
	exe, staged, old, nw := installFixture(t)
	if err := Install(exe, staged); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(exe); !bytes.Equal(b, nw) {
		t.Fatal("the new binary is not in place")
	}
	if b, _ := os.ReadFile(PreviousFile(exe)); !bytes.Equal(b, old) {
		t.Fatal("the old binary is not kept")
	}
	if st, _ := os.Stat(exe); st.Mode().Perm()&0o100 == 0 {
		t.Fatalf("the new binary is not executable: %v", st.Mode())
	}
	if err := Restore(exe); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(exe); !bytes.Equal(b, old) {
		t.Fatal("the old binary is not back")
	}
	if _, err := os.Stat(backFile(exe)); err == nil {
		t.Fatal("restore left its temporary file")
	}
	if err := Restore(filepath.Join(t.TempDir(), "calx")); err == nil {
		t.Fatal("a restore without a previous binary succeeded")
	}
}

// TestInstallCut stops an install after each of its steps, as a power cut
// would: the binary in place is whole, the old one or the new one, and the
// next install completes.
func TestInstallCut(t *testing.T) {
	steps := len(installSteps("x", "y"))
	for k := 0; k <= steps; k++ {
		exe, staged, old, nw := installFixture(t)
		for _, step := range installSteps(exe, staged)[:k] {
			if err := step(); err != nil {
				t.Fatal(err)
			}
		}
		b, _ := os.ReadFile(exe)
		if !bytes.Equal(b, old) && !bytes.Equal(b, nw) {
			t.Fatalf("cut after step %d: the binary in place is neither whole build", k)
		}
		Tidy(exe)
		if err := Install(exe, staged); err != nil {
			t.Fatalf("install after a cut at step %d: %v", k, err)
		}
		if b, _ := os.ReadFile(exe); !bytes.Equal(b, nw) {
			t.Fatalf("install after a cut at step %d: not in place", k)
		}
	}
}

// TestInstallKilled kills a process in the middle of installs (SIGKILL at
// random moments): the binary in place is always whole.
func TestInstallKilled(t *testing.T) {
	if os.Getenv("CALX_RELEASE_INSTALL_HELPER") != "" {
		exe, staged := os.Getenv("CALX_RELEASE_EXE"), os.Getenv("CALX_RELEASE_STAGED")
		for {
			Tidy(exe)
			if err := Install(exe, staged); err != nil {
				os.Exit(3)
			}
			if err := Restore(exe); err != nil {
				os.Exit(4)
			}
		}
	}
	cuts := 0
	for i := range 12 {
		exe, staged, old, nw := installFixture(t)
		cmd := exec.Command(os.Args[0], "-test.run=^TestInstallKilled$")
		cmd.Env = append(os.Environ(), "CALX_RELEASE_INSTALL_HELPER=1", "CALX_RELEASE_EXE="+exe, "CALX_RELEASE_STAGED="+staged)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(50+rand.IntN(200)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != -1 {
			t.Fatalf("run %d: the installing process ended by itself: %v", i, err)
		}
		b, _ := os.ReadFile(exe)
		switch {
		case bytes.Equal(b, old):
		case bytes.Equal(b, nw):
			cuts++
		default:
			t.Fatalf("run %d: killed mid-install, the binary in place is neither build (%d bytes)", i, len(b))
		}
	}
	t.Logf("%d of 12 kills left the new build in place, the rest the old one", cuts)
}

func TestState(t *testing.T) {
	file := StateFile(t.TempDir())
	if s, err := LoadState(file); err != nil || s.Step != "" {
		t.Fatalf("no state: %+v %v", s, err)
	}
	want := State{Version: "1.2", From: "1.1", Step: StepTrial, TrialSince: time.Now().UTC().Truncate(time.Millisecond), Window: time.Minute}
	if err := SaveState(file, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(file)
	if err != nil || got.Version != want.Version || got.Step != want.Step || !got.TrialSince.Equal(want.TrialSince) || got.Window != want.Window {
		t.Fatalf("state: %+v %v", got, err)
	}
	os.WriteFile(file, []byte("{"), 0o600)
	if _, err := LoadState(file); err == nil {
		t.Fatal("a torn state file read")
	}
}
