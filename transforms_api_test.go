package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The transforms' API: the demo's alarms and their journal, acknowledge
// and shelve, cycles, the emissions report, and a JSON 400 for every bad
// parameter that says which.
func TestTransformsAPI(t *testing.T) {
	d := startTestDemo(t, t.TempDir())
	c := login(t, "http://"+d.app.web.Addr())

	// The transforms load the demo's fleet config within seconds.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		status, body := c.Do("GET", "/api/v1/alarms", nil)
		if n, _ := body["count"].(float64); status != 200 || n != 30 {
			return fmt.Errorf("%d: %v alarms, want 10 for each of the 3 kilns", status, n)
		}
		return nil
	})
	const tripped = "limeworks/ghent/kilns/line1/kiln1/_alarms/tripped"
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		want         string
	}{
		{"GET", "/api/v1/alarms?state=angry", nil, 400, "state"},
		{"GET", "/api/v1/alarms?priority=critical", nil, 400, "priority"},
		{"GET", "/api/v1/alarms?active=maybe", nil, 400, "active"},
		{"GET", "/api/v1/alarms?suppressed=sometimes", nil, 400, "suppressed"},
		{"GET", "/api/v1/alarms?device=a//b", nil, 400, "device"},
		{"GET", "/api/v1/alarms/journal?limit=0", nil, 400, "limit"},
		{"GET", "/api/v1/alarms/journal?limit=20000", nil, 400, "limit"},
		{"GET", "/api/v1/alarms/journal?event=boom", nil, 400, "event"},
		{"GET", "/api/v1/alarms/journal?event=suppress", nil, 200, ""},
		{"GET", "/api/v1/alarms/journal?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", nil, 400, "from"},
		{"GET", "/api/v1/alarms/journal?to=yesterday", nil, 400, "to"},
		{"GET", "/api/v1/alarms/statistics?window=10s", nil, 400, "window"},
		{"GET", "/api/v1/alarms/statistics?flood=0", nil, 400, "flood"},
		{"GET", "/api/v1/alarms/statistics?chatter=many", nil, 400, "chatter"},
		{"GET", "/api/v1/alarms/statistics?stale=forever", nil, 400, "stale"},
		{"GET", "/api/v1/alarms/statistics?top=1000", nil, 400, "top"},
		{"GET", "/api/v1/alarms/statistics?from=2026-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", nil, 400, "from"},
		{"GET", "/api/v1/alarms/statistics?alarm=a//b", nil, 400, "alarm"},
		{"GET", "/api/v1/cycles?name=a/b", nil, 400, "name"},
		{"GET", "/api/v1/cycles?machine=/x", nil, 400, "machine"},
		{"GET", "/api/v1/emissions/report?day=2026-13-01", nil, 400, "day"},
		{"POST", "/api/v1/alarms/ack", map[string]any{"path": 7}, 400, "path"},
		{"POST", "/api/v1/alarms/ack", map[string]any{"path": "limeworks/nowhere/_alarms/x"}, 404, "no such alarm"},
		{"POST", "/api/v1/alarms/ack", map[string]any{"path": tripped}, 409, "nothing to acknowledge"},
		{"POST", "/api/v1/alarms/shelve", map[string]any{"path": tripped, "minutes": -1, "comment": "x"}, 400, "minutes"},
		{"POST", "/api/v1/alarms/shelve", map[string]any{"path": tripped, "minutes": 20000, "comment": "x"}, 400, "minutes"},
		{"POST", "/api/v1/alarms/shelve", map[string]any{"path": tripped, "minutes": 30}, 400, "comment"},
	} {
		status, body := c.Do(tc.method, tc.path, tc.body)
		msg, _ := body["error"].(string)
		if status != tc.status || !strings.Contains(msg, tc.want) {
			t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, status, msg, tc.status, tc.want)
		}
	}
	status, body := c.Do("POST", "/api/v1/alarms/shelve", map[string]any{"path": tripped, "minutes": 30, "comment": "burner maintenance"})
	if status != 200 || body["event"] != "shelve" || body["user"] != "admin" {
		t.Fatalf("shelve: %d %v", status, body)
	}
	status, body = c.Do("GET", "/api/v1/alarms?shelved=true", nil)
	if status != 200 || body["count"].(float64) != 1 {
		t.Fatalf("shelved alarms: %d %v", status, body)
	}
	status, body = c.Do("GET", "/api/v1/alarms/journal?alarm="+tripped, nil)
	if status != 200 || body["count"].(float64) != 1 {
		t.Fatalf("journal: %d %v", status, body)
	}
	tr := body["transitions"].([]any)[0].(map[string]any)
	if tr["comment"] != "burner maintenance" || tr["shelved_until"] == nil {
		t.Fatalf("journal row %v", tr)
	}
	status, body = c.Do("GET", "/api/v1/emissions/report?day="+time.Now().UTC().Format(time.DateOnly), nil)
	if status != 200 || body["class"] != "emission" || body["exceedances"] == nil {
		t.Fatalf("report: %d %v", status, body)
	}
	status, body = c.Do("GET", "/api/v1/alarms/statistics?alarm=limeworks/ghent&window=1h", nil)
	if status != 200 || body["windows"] != 24.0 || body["flood_above"] != 10.0 || body["by_priority"] == nil || body["stale"] == nil {
		t.Fatalf("alarm statistics: %d %v", status, body)
	}
	status, body = c.Do("GET", "/api/v1/cycles", nil)
	if status != 200 || body["cycles"] == nil {
		t.Fatalf("cycles: %d %v", status, body)
	}
}
