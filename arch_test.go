package main

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestArchitecture holds the packages to the layering the design draws,
// from what `go list -deps` says each one links: the domain (uns) imports
// no package of Calx; the cloud and the web server do not link the edge
// runtime (the fleet model and the connector contract are theirs to
// share); the store does not link the transforms (their rows are the
// domain's); no connector links the cloud.
func TestArchitecture(t *testing.T) {
	const mod = "github.com/calx-iiot/calx"
	out, err := exec.Command("go", "list", "-deps", "-json", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	type pkg struct {
		ImportPath string
		Imports    []string
		Deps       []string
		Standard   bool
	}
	deps := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(p.ImportPath, mod) {
			deps[p.ImportPath] = p.Deps
		}
	}
	if len(deps) < 10 {
		t.Fatalf("go list found %d packages of %s", len(deps), mod)
	}
	links := func(from, to string) bool { return slices.Contains(deps[from], to) }
	for from, ds := range deps {
		switch {
		case from == mod+"/uns":
			for _, d := range ds {
				if strings.HasPrefix(d, mod+"/") {
					t.Errorf("uns links %s: the domain imports nothing of Calx", d)
				}
			}
		case from == mod+"/cloud" || strings.HasPrefix(from, mod+"/web"):
			if links(from, mod+"/edge") {
				t.Errorf("%s links the edge runtime", from)
			}
		case strings.HasPrefix(from, mod+"/store"):
			if links(from, mod+"/transform") {
				t.Errorf("%s links the transforms", from)
			}
		case strings.HasPrefix(from, mod+"/edge/") && !strings.HasPrefix(from, mod+"/edge/edgetest"):
			if links(from, mod+"/cloud") {
				t.Errorf("connector %s links the cloud", from)
			}
			if links(from, mod+"/edge") {
				t.Errorf("connector %s links the edge runtime: it implements package connector's contract", from)
			}
		case strings.HasPrefix(from, mod+"/connector"):
			if links(from, mod+"/edge") {
				t.Errorf("%s links the edge runtime", from)
			}
		}
	}
	for _, p := range []string{mod + "/uns", mod + "/cloud", mod + "/web", mod + "/store/historian", mod + "/edge/modbus"} {
		if _, ok := deps[p]; !ok {
			t.Errorf("go list did not list %s", p)
		}
	}
}

// TestFileSize keeps each hand-written Go file readable in one sitting:
// none but generated and test files over 600 lines.
func TestFileSize(t *testing.T) {
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) && p != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || strings.HasSuffix(p, ".pb.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if n := bytes.Count(b, []byte("\n")); n > 600 {
			t.Errorf("%s has %d lines: split it by responsibility", p, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
