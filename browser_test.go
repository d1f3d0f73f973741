package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/internal/netcut"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/webtest"
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

// browserSession is a headless Chromium on the demo, which gathers the
// page's console errors, uncaught exceptions and refused resources
// (Content-Security-Policy) as it goes.
type browserSession struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string // folder of the screenshots

	mu     sync.Mutex
	errors []string
}

func newBrowserSession(t *testing.T, base string) *browserSession {
	chrome := needBrowser(t)
	if _, err := fs.Stat(web.Assets(), "static/vendor/uPlot.iife.min.js"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("uPlot is not embedded: run `make web` before the tests")
		}
		t.Skip("browser test skipped: uPlot not installed (make web)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.WindowSize(1400, 900), chromedp.UserDataDir(t.TempDir()))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // the browser starts without a deadline
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel)
	b := &browserSession{t: t, ctx: ctx, base: base, shot: cmpOr(os.Getenv("CALX_ARTIFACTS"), "artifacts") + "/screenshots"}
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				for _, a := range ev.Args {
					msg += string(a.Value) + a.Description + " "
				}
			}
		case *runtime.EventExceptionThrown:
			msg = ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				msg += " " + ev.ExceptionDetails.Exception.Description
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError {
				msg = ev.Entry.Text + " " + ev.Entry.URL
			}
		}
		if msg != "" {
			b.mu.Lock()
			b.errors = append(b.errors, msg)
			b.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	logs := chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, cdplog.Enable, cdp.Empty{})
		return err
	})
	if err := chromedp.Do(ctx, logs); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(b.shot, 0o755); err != nil {
		t.Fatal(err)
	}
	return b
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// do runs actions and fails the test on an error.
func (b *browserSession) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second) // one step
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.t.Fatalf("%s: %v (console errors: %v)", what, err, b.errors)
	}
}

// eval evaluates a JavaScript expression.
func eval[T any](b *browserSession, js string) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("%s: %v", js, err)
	}
	return v
}

// waitJS waits until a JavaScript expression is true.
func (b *browserSession) waitJS(what, js string, d time.Duration) {
	b.t.Helper()
	if _, err := chromedp.Run(b.ctx, chromedp.Poll[bool]("!!("+js+") || null", chromedp.WithPollingTimeout(d))); err != nil {
		b.t.Fatalf("%s: not so within %s: %v", what, d, err)
	}
}

// open goes to a page and waits for its ready selector; every page has a
// title, a main landmark and navigation, and writes no console error.
func (b *browserSession) open(path, ready string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS(ready)))
	title := eval[string](b, "document.title")
	if !strings.HasSuffix(title, "· Calx") || eval[int](b, `document.querySelectorAll("main#main, nav[aria-label]").length`) != 2 {
		b.t.Errorf("%s: title %q, or no main and nav landmarks", path, title)
	}
	b.noErrors(path)
}

func (b *browserSession) noErrors(where string) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errors) > 0 {
		b.t.Errorf("%s: console errors: %v", where, b.errors)
		b.errors = nil
	}
}

// screenshots writes the page at desktop and phone width, and fails when
// the phone has to scroll sideways.
func (b *browserSession) screenshots(name string) {
	b.t.Helper()
	for _, v := range []struct {
		suffix string
		w, h   int64
		mobile bool
	}{{"desktop", 1400, 900, false}, {"phone", 390, 844, true}} {
		opts := []chromedp.EmulateViewportOption{}
		if v.mobile {
			opts = append(opts, chromedp.EmulateMobile)
		}
		b.do("viewport", chromedp.EmulateViewport(v.w, v.h, opts...))
		time.Sleep(300 * time.Millisecond) // charts redraw on resize
		if v.mobile {
			if over := eval[int](b, "document.documentElement.scrollWidth - document.documentElement.clientWidth"); over > 0 {
				b.t.Errorf("%s: the page scrolls %d px sideways at 390 px", name, over)
			}
		}
		png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
		if err == nil {
			err = os.WriteFile(filepath.Join(b.shot, name+"-"+v.suffix+".png"), png, 0o644)
		}
		if err != nil {
			b.t.Errorf("screenshot %s: %v", name, err)
		}
	}
	b.do("viewport", chromedp.EmulateViewport(1400, 900))
	// The dark theme, as a system set to dark asks for it.
	b.do("dark", darkScheme(true))
	time.Sleep(400 * time.Millisecond) // charts redraw on resize
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err == nil {
		err = os.WriteFile(filepath.Join(b.shot, name+"-dark.png"), png, 0o644)
	}
	if err != nil {
		b.t.Errorf("screenshot %s dark: %v", name, err)
	}
	if bg := eval[string](b, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(18, 21, 26)" {
		b.t.Errorf("%s: the dark theme's background is %s", name, bg)
	}
	b.do("light", darkScheme(false))
}

// darkScheme emulates a system set to the dark colour scheme, or not.
func darkScheme(dark bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		p := emulation.SetEmulatedMediaParams{}
		if dark {
			p.Features = []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}
		}
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, p)
		return err
	})
}

// login fills in the sign-in form (the user name when not empty) and waits
// for the first page's ready selector.
func (b *browserSession) login(user, password, ready string) {
	b.t.Helper()
	steps := []chromedp.Action[chromedp.Void]{chromedp.WaitVisible(chromedp.CSS("#password"))}
	if user != "" {
		steps = append(steps, chromedp.SendKeys(chromedp.CSS("#username"), user))
	}
	steps = append(steps, chromedp.SendKeys(chromedp.CSS("#password"), password), chromedp.Click(chromedp.CSS("#submit")), chromedp.WaitVisible(chromedp.CSS(ready)))
	b.do("sign in as "+cmpOr(user, "the user typed"), steps...)
}

// TestBrowserLiveResumes: the namespace's live values come back by
// themselves after the network between browser and cloud is cut, without
// a reload; the header says what happens meanwhile.
func TestBrowserLiveResumes(t *testing.T) {
	d := startTestDemo(t, t.TempDir())
	line := netcut.New(t, d.app.web.Addr())
	b := newBrowserSession(t, "http://"+line.Addr())
	b.do("sign-in page", chromedp.Navigate(b.base+"/login"))
	b.login("admin", "test-admin-pw", "article.card")
	const kiln = "limeworks/ghent/kilns/line1/kiln1"
	life := `li[data-path="` + lifePath + `"] .value`
	b.open("/uns?open="+kiln, life)
	b.waitJS("live", `document.getElementById("conn").textContent === "live"`, 15*time.Second)
	eval[bool](b, `(window.calxNotReloaded = true)`)
	line.Cut(true)
	b.waitJS("the header saying the line is down", `document.getElementById("conn").textContent !== "live"`, 15*time.Second)
	before := eval[string](b, `document.querySelector('`+life+`').textContent`)
	time.Sleep(time.Second)
	line.Cut(false)
	b.waitJS("live again", `document.getElementById("conn").textContent === "live"`, 20*time.Second)
	b.waitJS("values moving again", `document.querySelector('`+life+`').textContent !== `+fmt.Sprintf("%q", before), 15*time.Second)
	if !eval[bool](b, `window.calxNotReloaded === true`) {
		t.Error("the page was loaded again")
	}
	b.mu.Lock()
	b.errors = nil // the browser reports the cut connections
	b.mu.Unlock()
}

// media emulates a CSS media type ("print"; "" for the screen).
func media(m string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: m})
		return err
	})
}

// TestBrowserPages walks the UI as its users do, in Chromium, on the demo:
// sign-in; the sites; a kiln's tags live in the namespace and its search;
// a trend; an alarm raised, acknowledged with a comment and found in the
// journal; the kilns' cycles; the fleet; users and tokens. Each page is
// shot at desktop and phone width into artifacts/screenshots.
func TestBrowserPages(t *testing.T) {
	d := startTestDemo(t, t.TempDir())
	b := newBrowserSession(t, "http://"+d.app.web.Addr())

	// Sign-in: a wrong password shows an error and stays; the right one enters.
	b.do("login page", chromedp.Navigate(b.base+"/"), chromedp.WaitVisible(chromedp.CSS("#login")))
	if loc := eval[string](b, "location.pathname"); loc != "/login" {
		t.Fatalf("not sent to the sign-in page: %s", loc)
	}
	b.screenshots("login")
	b.do("wrong password", chromedp.SendKeys(chromedp.CSS("#username"), "admin"), chromedp.SendKeys(chromedp.CSS("#password"), "wrong"),
		chromedp.Click(chromedp.CSS("#submit")))
	b.waitJS("an error for a wrong password", `document.getElementById("error").textContent.includes("wrong")`, 10*time.Second)
	b.mu.Lock()
	b.errors = nil // the browser reports the refused request (401) itself
	b.mu.Unlock()
	eval[bool](b, `(document.getElementById("password").value = "", true)`)
	b.login("", "test-admin-pw", `article.card[data-site="limeworks/ghent"]`)

	// Sites: a card per site with its edges' health.
	b.open("/", `article.card[data-site="limeworks/lyon"]`)
	if txt := eval[string](b, `document.querySelector('article.card[data-site="limeworks/ghent"]').textContent`); !strings.Contains(txt, "edge") || !strings.Contains(txt, "tags") {
		t.Errorf("Ghent's card: %q", txt)
	}

	// Namespace: a kiln opened from the URL; its values change live.
	const kiln = "limeworks/ghent/kilns/line1/kiln1"
	life := `li[data-path="` + lifePath + `"] .value`
	b.open("/uns?open="+kiln, life)
	first := eval[string](b, `document.querySelector('`+life+`').textContent`)
	b.waitJS("a live value", `document.querySelector('`+life+`').textContent !== `+fmt.Sprintf("%q", first)+` && document.getElementById("conn").textContent === "live"`, 15*time.Second)
	if n := eval[int](b, `document.querySelectorAll("#tree > li").length`); n != 1 {
		t.Errorf("%d nodes at the root, want the enterprise alone", n)
	}
	b.do("select a tag", chromedp.Click(`li[data-path="`+kiln+chromedp.CSS(`/burning_zone_temp"] .node`)), chromedp.WaitVisible(chromedp.CSS("#d-path")))
	if p := eval[string](b, `document.getElementById("d-path").textContent`); p != kiln+"/burning_zone_temp" {
		t.Errorf("details of %q", p)
	}
	b.screenshots("uns")
	b.do("search", chromedp.SendKeys(chromedp.CSS("#q"), "burning zone"))
	b.waitJS("search results", `document.querySelectorAll("#results tbody tr").length >= 3 && !document.getElementById("results").hidden`, 10*time.Second)
	if q := eval[string](b, "location.search"); !strings.Contains(q, "q=burning") {
		t.Errorf("the search is not in the URL: %s", q)
	}
	b.noErrors("search")

	// A kiln's dashboard, from its template: its state, a tile a tag with a
	// sparkline, values live. The engineer narrows the tiles and names the
	// KPIs of the site's card, for every kiln of the template.
	tile := `.tile[data-path="` + lifePath + `"] .value`
	b.open("/machines/"+kiln, tile)
	b.waitJS("the kiln's state", `/^state: \w+/.test(document.getElementById("state").textContent)`, 10*time.Second)
	first = eval[string](b, `document.querySelector('`+tile+`').textContent`)
	b.waitJS("a live tile", `document.querySelector('`+tile+`').textContent !== `+fmt.Sprintf("%q", first), 15*time.Second)
	b.screenshots("machine")
	b.do("edit the layout", chromedp.Click(chromedp.CSS("#layout summary")),
		chromedp.SetValue(chromedp.CSS("#kpis"), "state, production_rate"), chromedp.SetValue(chromedp.CSS("#tiles-in"), "burning_zone_temp, production_rate, o2"),
		chromedp.Click(chromedp.CSS(`#layout-form button[type="submit"]`)))
	time.Sleep(1500 * time.Millisecond) // the page loads again with the layout
	b.waitJS("three tiles after the reload", `document.querySelectorAll(".tile").length === 3`, 10*time.Second)
	b.waitJS("the machine's last 8 hours", `document.getElementById("events-note").textContent !== ""`, 10*time.Second)
	b.open("/", `article.card[data-site="limeworks/ghent"] ul.machines`)
	b.waitJS("the KPIs on the site's card", `[...document.querySelectorAll('article.card[data-site="limeworks/ghent"] .kpi')].some(k => k.textContent.includes("production_rate"))`, 10*time.Second)
	b.screenshots("home")
	b.do("open Ghent", chromedp.Click(chromedp.CSS(`article.card[data-site="limeworks/ghent"] h2 a`)),
		chromedp.WaitVisible(chromedp.CSS(`article.card[data-machine="`+kiln+`"] dd`)))
	if p := eval[string](b, "location.pathname"); p != "/sites/limeworks/ghent" {
		t.Errorf("the site's page is at %s", p)
	}
	b.waitJS("the kilns' KPIs on the site's page", `[...document.querySelectorAll('article.card[data-machine] dt')].some(dt => dt.textContent === "production_rate")`, 10*time.Second)
	b.noErrors("the site's page")
	b.screenshots("site")

	// Trends: two tags from the URL, drawn from history.
	b.open("/trends?tag="+kiln+"/burning_zone_temp&tag=limeworks/lyon/kilns/line1/kiln1/burning_zone_temp&range=3600", "#chart .uplot canvas")
	b.waitJS("a drawn trend", `/^[1-9]\d* points/.test(document.getElementById("note").textContent)`, 10*time.Second)
	if n := eval[int](b, `document.querySelectorAll("#chips .chip").length`); n != 2 {
		t.Errorf("%d tags on the trend, want 2", n)
	}
	if href := eval[string](b, `document.getElementById("csv").getAttribute("href")`); !strings.Contains(href, "format=csv") || strings.Count(href, "path=") != 2 {
		t.Errorf("CSV export of what is shown: %s", href)
	}
	// Min/max bands from the historian's buckets, then an hour earlier.
	eval[bool](b, `(document.body.dataset.drawnMs = "", true)`)
	b.do("bands", chromedp.Click(chromedp.CSS("#bands")))
	b.waitJS("bands drawn", `document.body.dataset.drawnMs && location.search.includes("bands=1") && document.querySelectorAll(".u-legend .u-series").length === 7`, 10*time.Second)
	b.screenshots("trends")
	b.do("earlier", chromedp.Click(chromedp.CSS(`#pan button[data-pan="-0.5"]`)))
	b.waitJS("the window moved", `location.search.includes("from=") && location.search.includes("to=")`, 10*time.Second)
	b.noErrors("trends")

	// Alarms: one added to the fleet config (the life counter is always
	// above -1) raises; the operator acknowledges it with a comment, and
	// the journal has the acknowledgement.
	fl := d.app.cloud.Fleet
	head, err := fl.Head(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fl.Get(b.ctx, head)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(v.YAML, "    alarms:\n", "    alarms:\n      - {name: life_test, tag: plc_life_counter, kind: high, limit: -1, priority: urgent}\n", 1)
	if _, err := fl.Save(b.ctx, []byte(cfg), "test", "an alarm that raises"); err != nil {
		t.Fatal(err)
	}
	row := `#active tr[data-path="` + kiln + `/_alarms/life_test"]`
	b.open("/alarms", row+".active_unacked")
	b.do("acknowledge", chromedp.Click(chromedp.CSS(row+" button")), chromedp.WaitVisible(chromedp.CSS("#act-comment")),
		chromedp.SendKeys(chromedp.CSS("#act-comment"), "seen on the panel"), chromedp.Click(chromedp.CSS("#act-go")),
		chromedp.WaitVisible(chromedp.CSS(row+".active_acked")))
	b.waitJS("the acknowledgement in the journal", `[...document.querySelectorAll("#journal td")].some(td => td.textContent.includes("seen on the panel"))`, 10*time.Second)
	b.waitJS("alarm statistics", `document.getElementById("stats").textContent.includes("per 10 min")`, 10*time.Second)
	if badge := eval[string](b, `document.getElementById("nav-alarms").textContent`); badge == "" {
		t.Error("no alarm count in the navigation")
	}
	b.screenshots("alarms")

	// Cycles: the three kilns, each with energy per cycle; a burn of the
	// first kiln as the cycle detector writes it, so as not to wait for one.
	now := time.Now().UTC()
	if err := d.app.cloud.Historian.WriteCycles(b.ctx, []uns.Cycle{{Machine: kiln, Name: "burn", Start: now.Add(-2 * time.Minute), End: now.Add(-time.Minute),
		Values: map[string]float64{"energy_kwh": 412.5, "avg_temp": 1101}}}); err != nil {
		t.Fatal(err)
	}
	b.open("/cycles", "#machine")
	b.waitJS("the kilns' cycles", `document.querySelectorAll("#machine option").length === 3`, 45*time.Second)
	b.waitJS("a kiln's cycles drawn", `[...document.querySelectorAll("#cycles tbody td")].some(td => td.textContent === "412.5") && document.querySelector("#chart .uplot canvas")`, 15*time.Second)
	b.waitJS("every kiln's energy per cycle", `document.querySelectorAll("#all tbody tr").length === 3`, 15*time.Second)
	b.screenshots("cycles")

	// Emissions: the environment officer's day, an exceedance of Ghent's
	// CO limit written as the alarm journal has it; printed without the
	// page's controls.
	co := kiln + "/_alarms/co_1h_limit"
	if err := d.app.cloud.Historian.WriteTransitions(b.ctx, []uns.Transition{
		{Alarm: co, Tag: "co_1h", Kind: "high", Priority: "high", Class: "emission", TS: now.Add(-20 * time.Minute), Event: uns.EventRaise, State: uns.StateUnacked, Limit: 250},
		{Alarm: co, Tag: "co_1h", Kind: "high", Priority: "high", Class: "emission", TS: now.Add(-5 * time.Minute), Event: uns.EventClear, State: uns.StateClearedUnack, Limit: 250},
	}); err != nil {
		t.Fatal(err)
	}
	b.open("/reports/emissions?day="+now.Format(time.DateOnly), `#summary tr[data-site="limeworks/ghent"]`)
	if txt := eval[string](b, `document.querySelector("#list tbody").textContent`); !strings.Contains(txt, "co_1h_limit") || !strings.Contains(txt, "15 min") {
		t.Errorf("the exceedance: %q", txt)
	}
	b.screenshots("emissions")
	b.do("print media", media("print"))
	if shown := eval[bool](b, `getComputedStyle(document.querySelector("header.top")).display !== "none" || getComputedStyle(document.querySelector(".toolbar")).display !== "none"`); shown {
		t.Error("the printed report has the page's header or controls")
	}
	b.do("screen media", media(""))

	// Fleet: both edges, each with a verdict; one opened.
	b.open("/fleet", `tr[data-edge="limeworks/ghent-edge"] .verdict`)
	b.do("open an edge", chromedp.Click(chromedp.CSS(`tr[data-edge="limeworks/ghent-edge"]`)), chromedp.WaitVisible(chromedp.CSS("#edge h2")))
	if q := eval[string](b, "location.search"); !strings.Contains(q, "edge=limeworks") {
		t.Errorf("the edge shown is not in the URL: %s", q)
	}
	b.screenshots("fleet")

	// Config: the editor shows a problem at its line as one types; a
	// change saved as a new version is rolled out to one edge, which
	// applies it.
	b.open("/config", `#states tr[data-edge="limeworks/ghent-edge"]`)
	b.waitJS("the config in the editor", `document.getElementById("yaml").value.includes("templates:") && document.getElementById("check").textContent === "valid"`, 10*time.Second)
	eval[bool](b, `(() => { const y = document.getElementById("yaml"); y.value = y.value.replace("templates:", "templates:\n  - nme: broken"); y.dispatchEvent(new Event("input")); return true; })()`)
	b.waitJS("a problem at its line", `[...document.querySelectorAll("#problems li")].some(li => li.textContent.includes("nme") && li.textContent.startsWith("line " + (document.getElementById("yaml").value.split("\n").findIndex(l => l.includes("nme: broken")) + 1) + ":"))`, 10*time.Second)
	eval[bool](b, `(() => { const y = document.getElementById("yaml"); y.value = y.value.replace("\n  - nme: broken", "").replace("limit: 1000, deadband: 10", "limit: 990, deadband: 10"); y.dispatchEvent(new Event("input")); return true; })()`)
	b.waitJS("valid again", `document.getElementById("check").textContent === "valid"`, 10*time.Second)
	b.do("save", chromedp.SendKeys(chromedp.CSS("#message"), "temp_low at 990"), chromedp.Click(chromedp.CSS("#save-btn")))
	b.waitJS("a new version", `document.getElementById("check").textContent.startsWith("saved as version")`, 10*time.Second)
	b.do("roll out to Ghent's edge", chromedp.SetValue(chromedp.CSS("#roll-target"), `{"edge":"limeworks/ghent-edge"}`), chromedp.Click(chromedp.CSS(`#roll button[type="submit"]`)))
	b.waitJS("the edge applies it", `(document.getElementById("progress-line") || {}).textContent?.includes("1 in-sync")`, 30*time.Second)
	b.do("diff version 1 to the newest", chromedp.Click(chromedp.CSS(`#versions tr[data-version="1"] button`)))
	b.waitJS("the diff", `[...document.querySelectorAll("#diff span.add")].some(s => s.textContent.includes("limit: 990"))`, 10*time.Second)
	b.screenshots("config")

	// Admin: a user scoped to Ghent made with the form; a token shown once.
	b.open("/admin", `#users tr[data-user="admin"]`)
	b.do("add a user", chromedp.SendKeys(chromedp.CSS("#u-name"), "ghent-shift"), chromedp.SendKeys(chromedp.CSS("#u-pw"), "a-long-password-1"),
		chromedp.SetValue(chromedp.CSS("#u-role"), "operator"), chromedp.SendKeys(chromedp.CSS("#u-scope"), "limeworks/ghent"),
		chromedp.Click(chromedp.CSS(`#user-form button[type="submit"]`)), chromedp.WaitVisible(chromedp.CSS(`#users tr[data-user="ghent-shift"]`)))
	b.do("make a token", chromedp.SendKeys(chromedp.CSS("#t-name"), "grafana"), chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#token-secret")))
	if s := eval[string](b, `document.getElementById("token-secret").textContent`); !strings.Contains(s, "calx_") {
		t.Errorf("the token is not shown: %q", s)
	}
	b.waitJS("the audit log", `[...document.querySelectorAll("#audit td")].some(td => td.textContent === "token-create")`, 10*time.Second)
	b.screenshots("admin")
	b.noErrors("the end")

	// The user just made sees Ghent alone, and no Admin page.
	b.do("sign out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login")))
	b.login("ghent-shift", "a-long-password-1", `article.card[data-site="limeworks/ghent"]`)
	if n := eval[int](b, `document.querySelectorAll("article.card").length + document.querySelectorAll('nav a[href="/admin"]').length`); n != 1 {
		t.Errorf("a Ghent operator sees %d cards and admin links, want Ghent's card alone", n)
	}
	b.noErrors("a scoped user")
}

// TestBrowserSpeed measures the UI where a plant strains it: a namespace of
// 100,000 tags (100 sites of 10 machines of 100 tags) and a trend of a
// year. It logs the figures and writes them to artifacts/ui-speed.txt
// (docs/BENCHMARKS.md keeps a run's); it asserts what is shown, not how fast.
func TestBrowserSpeed(t *testing.T) {
	if testing.Short() {
		t.Skip("the UI's speed on 100,000 tags: not with -short")
	}
	app := webtest.Start(t, cloud.Options{})
	ctx := context.Background()
	const trendTag = "plant/site00/area/line/m00/t000"
	for i := range 100_000 {
		app.Cloud.Registry.Define(uns.Tag{Path: uns.Path(fmt.Sprintf("plant/site%02d/area/line/m%02d/t%03d", i/1000, (i/100)%10, i%100)),
			DataType: uns.TypeFloat64, Unit: "°C", Description: fmt.Sprintf("temperature %d", i%100)})
	}
	// The tags of site00 in the history, as births put them there.
	var site00 []uns.Tag
	for _, ts := range app.Cloud.Registry.List("plant/site00") {
		site00 = append(site00, ts.Tag)
	}
	if err := app.Cloud.Historian.UpsertTags(ctx, site00); err != nil {
		t.Fatal(err)
	}
	// A year of the trend's tag, a value every 5 minutes.
	end := time.Now().UTC().Truncate(time.Minute)
	var year []uns.Sample
	for ts := end.Add(-365 * 24 * time.Hour); !ts.After(end); ts = ts.Add(5 * time.Minute) {
		year = append(year, uns.Sample{Path: trendTag, TS: ts, Value: uns.Float(900 + 200*float64(ts.YearDay())/365 + float64(ts.Hour())), Quality: uns.Good})
	}
	if err := app.Cloud.Historian.WriteBatch(ctx, year); err != nil {
		t.Fatal(err)
	}
	live := make([]uns.Sample, 0, 1000)
	for i := range 1000 {
		live = append(live, uns.Sample{Path: uns.Path(fmt.Sprintf("plant/site00/area/line/m%02d/t%03d", i/100, i%100)), TS: end, Value: uns.Float(float64(i)), Quality: uns.Good})
	}
	app.Cloud.Registry.Update(live)
	if err := app.Cloud.Historian.WriteBatch(ctx, live); err != nil {
		t.Fatal(err)
	}

	b := newBrowserSession(t, app.Base)
	b.do("sign-in page", chromedp.Navigate(b.base+"/login"))
	b.login("admin", webtest.AdminPassword, `article.card[data-site="plant/site99"]`)
	fcp := func() float64 {
		return eval[float64](b, `(performance.getEntriesByName("first-contentful-paint")[0] || {startTime: -1}).startTime`)
	}
	var report []string
	add := func(what string, ms float64, target string) {
		report = append(report, fmt.Sprintf("%-58s %6.0f ms   (target %s)", what, ms, target))
	}

	b.open("/", `article.card[data-site="plant/site99"]`)
	add("home, first contentful paint", fcp(), "< 500 ms")
	b.open("/machines/plant/site00/area/line/m00", `.tile[data-path="`+trendTag+`"]`)
	add("machine dashboard (100 tags), first contentful paint", fcp(), "< 500 ms")
	b.open("/uns", `li[data-path="plant"]`)
	add("/uns on 100,000 tags, first contentful paint", fcp(), "< 1 s")
	b.waitJS("the tree's first level", `document.body.dataset.treeMs`, 10*time.Second)
	add("/uns on 100,000 tags, first level of the tree shown", float64(eval[int](b, `Number(document.body.dataset.treeMs)`)), "< 1 s")
	b.do("search", chromedp.SendKeys(chromedp.CSS("#q"), "m07/t042"))
	b.waitJS("100 results", `document.body.dataset.searchMs && document.querySelectorAll("#results tbody tr").length === 100`, 10*time.Second)
	add("search of 100,000 tags (100 found), asked to shown", float64(eval[int](b, `Number(document.body.dataset.searchMs)`)), "< 200 ms")
	if html := eval[int](b, `document.documentElement.outerHTML.length`); html > 2_000_000 {
		t.Errorf("the namespace page holds %d bytes: the whole namespace was sent", html)
	}
	b.open("/trends?tag="+trendTag+"&range=31536000", "#chart .uplot canvas")
	b.waitJS("a year drawn", `document.body.dataset.drawnMs`, 20*time.Second)
	add("trend of a year (105,121 points stored), page load to drawn", float64(eval[int](b, `Number(document.body.dataset.drawnMs)`)), "< 1 s")
	b.noErrors("speed")

	out := strings.Join(report, "\n") + "\n"
	t.Log("\n" + out)
	if err := os.WriteFile(filepath.Join(filepath.Dir(b.shot), "ui-speed.txt"), []byte(out), 0o644); err != nil {
		t.Error(err)
	}
}
