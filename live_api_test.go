package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestLiveAPIPrefixes: GET /api/v1/live?prefix= streams only the values under
// its prefixes, a prefix matches whole segments, and a bad prefix is a JSON
// 400 that names it.
func TestLiveAPIPrefixes(t *testing.T) {
	d := startTestDemo(t, t.TempDir())
	base := "http://" + d.app.web.Addr()
	c := login(t, base)

	code, out := c.Do("GET", "/api/v1/live?prefix=limeworks//ghent", nil)
	if code != http.StatusBadRequest || !strings.Contains(out["error"].(string), "prefix") {
		t.Fatalf("bad prefix: %d %v", code, out)
	}

	// Paths seen on a live feed with these prefixes within a while.
	seen := func(window time.Duration, prefixes ...string) map[string]int {
		ctx, cancel := context.WithTimeout(context.Background(), window)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/api/v1/live?"+url.Values{"prefix": prefixes}.Encode(), nil)
		req.Header.Set("Authorization", "Bearer "+c.Token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("live %v: %s", prefixes, res.Status)
		}
		got := map[string]int{}
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok || line == "" || line[0] != '[' {
				continue
			}
			var batch []struct {
				Path string `json:"path"`
			}
			if err := json.Unmarshal([]byte(line), &batch); err != nil {
				t.Fatalf("live event: %v: %s", err, line)
			}
			for _, v := range batch {
				got[v.Path]++
			}
		}
		return got
	}

	const kiln = "limeworks/ghent/kilns/line1/kiln1"
	got := seen(3*time.Second, kiln, "limeworks/lyon/kilns/line1/kiln1/o2")
	var n, o2 int
	for p, k := range got {
		switch {
		case strings.HasPrefix(p, kiln+"/"):
			n += k
		case p == "limeworks/lyon/kilns/line1/kiln1/o2":
			o2 += k
		default:
			t.Errorf("%s is under none of the prefixes", p)
		}
	}
	if n < 10 || o2 == 0 {
		t.Errorf("%d values of %s and %d of lyon's o2 in 3 s (all: %v)", n, kiln, o2, got)
	}
	// A prefix is whole segments: kiln matches no kiln1.
	if got := seen(time.Second, "limeworks/ghent/kilns/line1/kiln"); len(got) != 0 {
		t.Errorf("prefix .../kiln streamed %v", got)
	}
}
