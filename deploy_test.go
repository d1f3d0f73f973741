package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnits checks the units of deploy/systemd: every flag of their
// command lines is one the binary takes, and systemd itself finds nothing
// wrong in them (systemd-analyze verify, the binary's path put on one that
// exists here).
func TestSystemdUnits(t *testing.T) {
	units, _ := filepath.Glob("deploy/systemd/*.service")
	if len(units) < 2 {
		t.Fatalf("units: %v", units)
	}
	dir := t.TempDir()
	var copies []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		var exec []string
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
				exec = strings.Fields(v)
			}
		}
		if len(exec) < 2 || filepath.Base(exec[0]) != "calx" {
			t.Fatalf("%s: ExecStart %q", u, exec)
		}
		var help bytes.Buffer
		run([]string{exec[1], "--help"}, &help, &help)
		for _, a := range exec[2:] {
			if !strings.HasPrefix(a, "-") {
				continue
			}
			name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if !strings.Contains(help.String(), "  -"+name+" ") && !strings.Contains(help.String(), "  -"+name+"\n") {
				t.Errorf("%s: calx %s takes no flag -%s", u, exec[1], name)
			}
		}
		c := filepath.Join(dir, filepath.Base(u))
		os.WriteFile(c, bytes.ReplaceAll(b, []byte(exec[0]), []byte("/bin/true")), 0o644)
		copies = append(copies, c)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze is not installed (Debian: systemd)")
		}
		t.Skip("systemd-analyze is not installed (Debian: systemd)")
	}
	out, err := exec.Command("systemd-analyze", append([]string{"verify"}, copies...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
