package fault

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDemoStartToFirstLiveValue runs `calx demo` as a user does and
// measures, from the process's start, when its UI answers and when the
// first live value reaches the live API the browser listens to. It logs
// the figures (docs/BENCHMARKS.md keeps a run's); it asserts that a value
// comes, not how fast.
func TestDemoStartToFirstLiveValue(t *testing.T) {
	if testing.Short() {
		t.Skip("fault tests run the real binary; skipped with -short")
	}
	binary(t) // built before the clock starts
	httpAddr := freeAddr(t)
	p := &proc{t: t, args: []string{"demo", "--http", httpAddr, "--mqtt", freeAddr(t), "--data-dir", t.TempDir()}}
	began := time.Now()
	p.start()
	t.Cleanup(p.stop)
	waitReady(t, httpAddr, 5*time.Millisecond)
	ready := time.Since(began)
	b, _ := json.Marshal(map[string]string{"username": "admin", "password": "fault-admin-pw"})
	res, err := http.Post("http://"+httpAddr+"/api/v1/login", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ Token string }
	json.NewDecoder(res.Body).Decode(&tok)
	res.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+httpAddr+"/api/v1/live", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	live, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Body.Close()
	sc := bufio.NewScanner(live.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "event: values") {
			first := time.Since(began)
			t.Logf("calx demo: UI ready %s after the process started, first live value %s", ready.Round(time.Millisecond), first.Round(time.Millisecond))
			return
		}
	}
	t.Fatalf("no live value: %v\n%s", sc.Err(), p.output())
}
