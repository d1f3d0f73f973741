package web_test

import (
	"fmt"
	"net/url"
	"testing"

	"github.com/calx-iiot/calx/web/webtest"
)

// TestNamespaceChildrenAndSearch: the tree a level at a time (folders with
// their tag counts and edges, tags with values), and a search of every
// word in path, description and unit; both within the user's scope.
func TestNamespaceChildrenAndSearch(t *testing.T) {
	app := scopedSite(t)
	admin := app.Admin()
	viewer := webtest.Login(t, app.Base, "ghent-viewer", "ghent-viewer-pw")

	names := func(out map[string]any) map[string]float64 {
		m := map[string]float64{}
		for _, n := range out["children"].([]any) {
			n := n.(map[string]any)
			m[n["name"].(string)] = n["tags"].(float64)
		}
		return m
	}
	count := func(prefix string) float64 {
		_, out := admin.Do("GET", "/api/v1/namespace?prefix="+prefix, nil)
		return out["count"].(float64)
	}
	nGhent, nNamur := count("limeworks/ghent"), count("limeworks/namur")
	code, out := admin.Do("GET", "/api/v1/namespace/children?prefix=limeworks", nil)
	if got := names(out); code != 200 || len(got) != 2 || got["ghent"] != nGhent || got["namur"] != nNamur || nGhent < 2 {
		t.Errorf("admin, children of limeworks (%v in Ghent, %v in Namur): %d %v", nGhent, nNamur, code, out)
	}
	_, out = viewer.Do("GET", "/api/v1/namespace/children?prefix=limeworks", nil)
	if got := names(out); len(got) != 1 || got["ghent"] != nGhent {
		t.Errorf("a Ghent user, children of limeworks: %v", out)
	}
	if _, out = viewer.Do("GET", "/api/v1/namespace/children?prefix=limeworks/namur", nil); out["count"] != 0.0 {
		t.Errorf("a Ghent user, children of Namur: %v", out)
	}
	_, out = viewer.Do("GET", "/api/v1/namespace/children", nil)
	if got := names(out); len(got) != 1 || got["limeworks"] != nGhent {
		t.Errorf("a Ghent user, the root: %v", out)
	}
	// A machine's level: its tags, each with its value, then the
	// underscore folders (cycles, alarms).
	_, out = admin.Do("GET", "/api/v1/namespace/children?prefix="+ghent, nil)
	kids := out["children"].([]any)
	first, last := kids[0].(map[string]any), kids[len(kids)-1].(map[string]any)
	if first["name"] != "burning_zone_temp" || first["tag"].(map[string]any)["value"] != 1100.0 || last["name"] != "_cycles" || last["tags"].(float64) < 1 {
		t.Errorf("the kiln's children: %v", out)
	}
	_, out = admin.Do("GET", "/api/v1/namespace/children?prefix=limeworks", nil)
	for _, n := range out["children"].([]any) {
		n := n.(map[string]any)
		if want := "[limeworks/" + n["name"].(string) + "-edge]"; fmt.Sprint(n["edges"]) != want {
			t.Errorf("edges of %s: %v, want %s", n["name"], n["edges"], want)
		}
	}

	for _, c := range []struct {
		user  *webtest.Client
		q     string
		count float64
	}{
		{admin, "kilns/line1/kiln1/burning", 2}, {admin, "KILNS/LINE1/KILN1/BURNING", 2}, {admin, "kiln1/burning namur", 1},
		{admin, "kiln1/burning zebra", 0}, {viewer, "kiln1/burning", 1}, {viewer, "namur", 0},
		{admin, "kwh/t", 3}, {viewer, "kwh/t", 2}, // the unit
		{admin, "avg of burning", 3}, // the description
	} {
		code, out := c.user.Do("GET", "/api/v1/namespace/search?q="+url.QueryEscape(c.q), nil)
		if code != 200 || out["count"] != c.count {
			t.Errorf("search %q: %d %v, want %v", c.q, code, out, c.count)
		}
	}
	if _, out := admin.Do("GET", "/api/v1/namespace/search?q=kiln1&limit=1", nil); out["count"].(float64) < 2 || len(out["tags"].([]any)) != 1 || out["truncated"] != true {
		t.Errorf("a limited search: %v", out)
	}
	for _, bad := range []string{"q=", "q=a&limit=0", "q=a&limit=x"} {
		if code, _ := admin.Do("GET", "/api/v1/namespace/search?"+bad, nil); code != 400 {
			t.Errorf("search?%s: %d", bad, code)
		}
	}
	if code, _ := admin.Do("GET", "/api/v1/namespace/children?prefix=a//b", nil); code != 400 {
		t.Errorf("children of a wildcard: %d", code)
	}
}
