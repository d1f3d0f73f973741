package fleet

import (
	"errors"
	"strings"
	"testing"
)

func TestRedactRoundTrip(t *testing.T) {
	const text = `templates:
  - name: a
    params: {password: p1, site: ghent}
    settings:
      headers: {X-Key: h1}
      bearer_token: t1
      interval: 1s
edges:
  - group: g
    edge_id: e1
    devices:
      - {id: d1, path: x/y, template: a, params: {password: p2}}
      - {id: d2, path: x/z, template: a, params: {password: p3}}
`
	red, err := Redact(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"p1", "p2", "p3", "h1", "t1"} {
		if strings.Contains(red, ": "+s) {
			t.Errorf("redacted text shows %s:\n%s", s, red)
		}
	}
	if !strings.Contains(red, "site: ghent") || !strings.Contains(red, "interval: 1s") {
		t.Fatalf("redaction took more than secrets:\n%s", red)
	}
	// The devices swap places: each keeps its own password.
	swapped := strings.Replace(strings.Replace(red, "id: d1", "id: TMP", 1), "id: d2", "id: d1", 1)
	swapped = strings.Replace(strings.Replace(swapped, "id: TMP", "id: d2", 1), "path: x/y", "path: x/q", 1)
	back, err := Unredact(swapped, text)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("back", []byte(back))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range c.Edges[0].Devices {
		want := map[string]string{"d1": "p2", "d2": "p3"}[d.ID]
		if d.Params["password"] != want {
			t.Errorf("%s password %v, want %s", d.ID, d.Params["password"], want)
		}
	}
	if _, err := Unredact(red, ""); !errors.Is(err, ErrRedactedUnknown) {
		t.Fatalf("unredact with no previous version: %v", err)
	}
	if same, _ := Redact("a: 1\n"); same != "a: 1\n" {
		t.Fatalf("a text without secrets changed: %q", same)
	}
}
