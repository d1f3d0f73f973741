package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseCommands makes a key pair, signs a real binary (this test's),
// checks it, and refuses it changed or checked with another key.
func TestReleaseCommands(t *testing.T) {
	dir := t.TempDir()
	exe, _ := os.Executable()
	bin := filepath.Join(dir, "calx")
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(bin, b, 0o755)
	calx := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := calx("release", "keygen", "--out", dir); code != 0 {
		t.Fatalf("keygen: %d %s", code, out)
	}
	if st, _ := os.Stat(filepath.Join(dir, "release.key")); st == nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the private key is not private: %v", st)
	}
	if code, out := calx("release", "keygen", "--out", dir); code == 0 || !strings.Contains(out, "not overwritten") {
		t.Fatalf("keygen over a key: %d %s", code, out)
	}
	code, out := calx("release", "sign", "--key", filepath.Join(dir, "release.key"), "--binary", bin, "--version", "2.0.0", "--notes", "faster")
	if code != 0 || !strings.Contains(out, "linux/") {
		t.Fatalf("sign: %d %s", code, out)
	}
	verify := func(pub string) (int, string) {
		return calx("release", "verify", "--public-key", pub, "--manifest", bin+".manifest.json", "--binary", bin)
	}
	if code, out := verify(filepath.Join(dir, "release.pub")); code != 0 || !strings.Contains(out, "good") {
		t.Fatalf("verify: %d %s", code, out)
	}
	other := filepath.Join(dir, "other")
	os.Mkdir(other, 0o700)
	calx("release", "keygen", "--out", other)
	if code, out := verify(filepath.Join(other, "release.pub")); code != 1 || !strings.Contains(out, "signed by key") {
		t.Fatalf("verify with another key: %d %s", code, out)
	}
	b[len(b)/2] ^= 0xff
	os.WriteFile(bin, b, 0o755)
	if code, out := verify(filepath.Join(dir, "release.pub")); code != 1 || !strings.Contains(out, "does not match") {
		t.Fatalf("verify a changed binary: %d %s", code, out)
	}
	os.WriteFile(bin+".txt", []byte("#!/bin/sh\n"), 0o755)
	if code, out := calx("release", "sign", "--key", filepath.Join(dir, "release.key"), "--binary", bin+".txt", "--version", "2.0.1"); code != 1 || !strings.Contains(out, "not a Linux") {
		t.Fatalf("sign a script: %d %s", code, out)
	}
}
