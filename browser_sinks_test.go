package main

import (
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/internal/pgtest"
	"github.com/calx-iiot/calx/sink/postgres"
)

// TestBrowserSinks: the demo with a PostgreSQL sink; the fleet page shows
// the sink writing, then failing with the database's error while the
// database is down, and catching up once it is back.
func TestBrowserSinks(t *testing.T) {
	needBrowser(t)
	pg := pgtest.Start(t)
	sk, err := postgres.Open(postgres.Options{URL: pg.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sk.Close)
	t.Setenv("CALX_ADMIN_PASSWORD", "test-admin-pw")
	d, err := startDemo(t.Context(), demoOptions{HTTP: "127.0.0.1:0", MQTT: "127.0.0.1:0", DataDir: t.TempDir(), SimInterval: 20 * time.Millisecond,
		Sinks: []cloud.Sink{{Name: "warehouse", Writer: sk}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.shutdown(t.Context()) })

	b := newBrowserSession(t, "http://"+d.app.web.Addr())
	b.do("sign-in page", chromedp.Navigate(b.base+"/login"))
	b.login("admin", "test-admin-pw", "header.top")
	b.open("/fleet", `#sinks-table tr[data-sink="warehouse"]`)
	b.waitJS("the sink writing", `(() => { const r = document.querySelector('#sinks-table tr[data-sink="warehouse"]'); return /ok/.test(r.children[1].textContent) && Number(r.children[2].textContent) > 0; })()`, 30*time.Second)
	b.screenshots("fleet-sinks")

	pg.Stop()
	b.waitJS("the sink failing", `/failing: .*postgres/.test(document.querySelector('#sinks-table tr[data-sink="warehouse"]').textContent)`, 40*time.Second)
	row := eval[string](b, `document.querySelector('#sinks-table tr[data-sink="warehouse"]').textContent`)
	if !strings.Contains(row, "messages") {
		t.Errorf("the sink's backlog is not shown: %q", row)
	}
	b.screenshots("fleet-sink-failing")
	pg.Start()
	b.waitJS("the sink back", `/ok/.test(document.querySelector('#sinks-table tr[data-sink="warehouse"]').children[1].textContent)`, 60*time.Second)
	b.noErrors("the fleet page with a sink")
	if st := d.app.cloud.SinkStats(); len(st) != 1 || st[0].Failures == 0 {
		t.Fatalf("sink counters: %+v", st)
	}
}
