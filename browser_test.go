package main

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/calx-iiot/calx/web"
)

// needBrowser returns the path of Chromium. Without one the test skips on a
// developer's machine and fails under CI, where .ci/run installs it.
func needBrowser(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH: CI must install it (apt-get install chromium)")
	}
	t.Skip("browser test skipped: no chromium on PATH (apt-get install chromium)")
	return ""
}

// TestBrowserLoginLiveValuesAndTrend signs in as a user would, sees the
// namespace tree with values changing without a reload, and opens a trend.
func TestBrowserLoginLiveValuesAndTrend(t *testing.T) {
	chrome := needBrowser(t)
	if _, err := fs.Stat(web.Assets(), "static/vendor/uPlot.iife.min.js"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("uPlot is not embedded: run `make web` before the tests")
		}
		t.Skip("browser test skipped: uPlot not installed (make web)")
	}
	d := startTestDemo(t, t.TempDir())
	base := "http://" + d.app.web.Addr()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.WindowSize(1400, 900), chromedp.UserDataDir(t.TempDir()))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/"), chromedp.WaitVisible(css("#login"))); err != nil {
		t.Fatal(err)
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || !strings.HasSuffix(loc, "/login") {
		t.Fatalf("not sent to the login page: %s %v", loc, err)
	}
	// A wrong password shows an error and stays on the page.
	err = chromedp.Do(ctx, chromedp.SendKeys(css("#username"), "admin"), chromedp.SendKeys(css("#password"), "wrong"),
		chromedp.Click(css("#submit")))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById("error").textContent || null`, chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil || !strings.Contains(msg, "wrong") {
		t.Fatalf("wrong password: %q %v", msg, err)
	}
	const row = `tr.tag[data-path="limeworks/ghent/kilns/line1/kiln1/plc_life_counter"]`
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(document.getElementById("password").value = "", true)`)); err != nil {
		t.Fatal(err)
	}
	err = chromedp.Do(ctx, chromedp.SendKeys(css("#password"), "test-admin-pw"),
		chromedp.Click(css("#submit")), chromedp.WaitVisible(css(row)))
	if err != nil {
		t.Fatalf("sign in: %v", err)
	}
	// The tree is indented by classes: the Content-Security-Policy allows
	// no inline style.
	indent, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`parseFloat(getComputedStyle(document.querySelector('`+row+` td.name')).paddingLeft) - `+
		`parseFloat(getComputedStyle(document.querySelector('tr.folder td')).paddingLeft)`))
	if err != nil || indent < 40 {
		t.Errorf("a tag row of depth 5 is indented %vpx more than the tree's root: %v", indent, err)
	}
	valueJS := `document.querySelector('` + row + ` td.value').textContent`
	connJS := `document.getElementById("conn").textContent`
	first, err := chromedp.Run(ctx, chromedp.Evaluate[string](valueJS))
	if err != nil {
		t.Fatal(err)
	}
	// Values change in place, without a reload.
	deadline := time.Now().Add(15 * time.Second)
	for {
		later, err := chromedp.Run(ctx, chromedp.Evaluate[string](valueJS))
		if err != nil {
			t.Fatal(err)
		}
		conn, err := chromedp.Run(ctx, chromedp.Evaluate[string](connJS))
		if err != nil {
			t.Fatal(err)
		}
		if later != first && conn == "live" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("value did not update live: %q then %q (connection %q)", first, later, conn)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sites, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("tr.folder td")).map(td => td.textContent.trim())`))
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(sites, " ")
	if !strings.Contains(joined, "ghent") || !strings.Contains(joined, "lyon") {
		t.Fatalf("tree lacks a site: %v", sites)
	}
	// A click on a tag draws its trend from history.
	err = chromedp.Do(ctx, chromedp.Click(css(`tr.tag[data-path="limeworks/lyon/kilns/line1/kiln1/burning_zone_temp"]`)),
		chromedp.WaitVisible(css("#chart .uplot canvas")))
	if err != nil {
		t.Fatalf("trend: %v", err)
	}
	note, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("chart-note").textContent`))
	if err != nil || !strings.Contains(note, "points") || strings.HasPrefix(note, "0 points") {
		t.Fatalf("trend note %q %v", note, err)
	}

	// An alarm added to the fleet config (the life counter is always
	// above -1) raises within seconds: the list shows it, live, and
	// acknowledges it.
	fl := d.app.cloud.Fleet
	head, err := fl.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fl.Get(ctx, head)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(v.YAML, "    alarms:\n", "    alarms:\n      - {name: life_test, tag: plc_life_counter, kind: high, limit: -1, priority: urgent}\n", 1)
	if _, err := fl.Save(ctx, []byte(cfg), "test", "an alarm that raises"); err != nil {
		t.Fatal(err)
	}
	alarmRow := `#alarms tr[data-path="limeworks/ghent/kilns/line1/kiln1/_alarms/life_test"]`
	if err := chromedp.Do(ctx, chromedp.WaitVisible(css(alarmRow+".active_unacked"))); err != nil {
		t.Fatalf("alarm not listed: %v", err)
	}
	if err := chromedp.Do(ctx, chromedp.Click(css(alarmRow+" button")), chromedp.WaitVisible(css(alarmRow+".active_acked"))); err != nil {
		t.Fatalf("alarm not acknowledged: %v", err)
	}
	// The line of alarm statistics counts its raise among the last day's.
	for deadline := time.Now().Add(10 * time.Second); ; {
		stats, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("alarm-stats").textContent`))
		if err == nil && strings.Contains(stats, "per 10 min") && strings.Contains(stats, "kiln1 · life_test") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("alarm statistics %q %v", stats, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// The kilns' cycle tags exist once their first cycle is recorded; the
	// page reloads its tree when the live feed brings tags it lacks.
	var machines int
	for deadline := time.Now().Add(30 * time.Second); ; {
		machines, err = chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#cycle-machine option").length`))
		if err == nil && machines == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d machines with cycles to chart, want the 3 kilns: %v", machines, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if shot := os.Getenv("CALX_SCREENSHOT"); shot != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err == nil {
			err = os.WriteFile(shot, png, 0o644)
		}
		if err != nil {
			t.Logf("screenshot: %v", err)
		}
	}
}
