package web_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	_ "github.com/calx-iiot/calx/connector/all" // the fleet config names connectors
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/webtest"
)

const (
	ghent = "limeworks/ghent/kilns/line1/kiln1"
	namur = "limeworks/namur/kilns/line1/kiln1"
)

// scopedSite is a cloud with the example fleet (sites Ghent and Namur),
// a tag, a trip alarm, a cycle and an emission exceedance on a kiln of
// each, and users scoped to Ghent.
func scopedSite(t testing.TB) *webtest.App {
	t.Helper()
	return scopedSiteWith(t, web.Options{})
}

// scopedSiteWith is scopedSite with web options.
func scopedSiteWith(t testing.TB, wo web.Options) *webtest.App {
	t.Helper()
	ctx := context.Background()
	var users []web.User
	for _, role := range []string{web.RoleViewer, web.RoleOperator, web.RoleEngineer} {
		h, err := cloud.HashPassword("ghent-" + role + "-pw")
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, web.User{Username: "ghent-" + role, PasswordHash: h, Role: role, Scope: web.Scope{"limeworks/ghent"}})
	}
	app := webtest.StartWith(t, cloud.Options{}, wo, users...)
	fleet, err := os.ReadFile("../examples/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if code, out := app.Admin().Text("PUT", "/api/v1/config?message=sites", string(fleet), ""); code != 201 {
		t.Fatalf("PUT config: %d %s", code, out)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var samples []uns.Sample
	for _, dev := range []string{ghent, namur} {
		edgeID := strings.Split(dev, "/")[1] + "-edge"
		for _, name := range []string{"burning_zone_temp", "state"} {
			tag := uns.Tag{Path: uns.Path(dev + "/" + name), DataType: uns.TypeFloat64, Writable: name == "burning_zone_temp",
				Sparkplug: uns.SparkplugAddr{Group: "limeworks", Edge: edgeID, Device: "kiln1", Metric: name}}
			if name == "state" {
				tag.DataType = uns.TypeString
			}
			app.Cloud.Registry.Define(tag)
			if err := app.Cloud.Historian.UpsertTags(ctx, []uns.Tag{tag}); err != nil {
				t.Fatal(err)
			}
		}
		samples = append(samples, uns.Sample{Path: uns.Path(dev + "/burning_zone_temp"), TS: now, Value: uns.Float(1100), Quality: uns.Good})
		co := uns.AlarmPath(dev, "co_1h_limit")
		if err := app.Cloud.Historian.WriteTransitions(ctx, []uns.Transition{
			{Alarm: co, Tag: "co_1h", Kind: "high", Priority: "high", Class: "emission", TS: now.Add(-time.Minute), Event: uns.EventRaise, State: uns.StateUnacked, Limit: 200},
		}); err != nil {
			t.Fatal(err)
		}
		if err := app.Cloud.Historian.WriteCycles(ctx, []uns.Cycle{{Machine: dev, Name: "burn", Start: now.Add(-time.Hour), End: now.Add(-time.Minute)}}); err != nil {
			t.Fatal(err)
		}
	}
	app.Cloud.Registry.Update(samples)
	if err := app.Cloud.Historian.WriteBatch(ctx, samples); err != nil {
		t.Fatal(err)
	}
	// Both kilns trip: the transforms raise each one's trip alarm.
	js := app.Cloud.Bus.JetStream()
	edgetest.CheckFor(t, 20*time.Second, 200*time.Millisecond, func() error {
		for _, dev := range []string{ghent, namur} {
			b := uns.AppendBatch(nil, []uns.Sample{{Path: uns.Path(dev + "/state"), TS: time.Now(), Value: uns.String("tripped"), Quality: uns.Good}})
			if _, err := js.Publish(ctx, store.SubjectUNS+".limeworks."+strings.Split(dev, "/")[1], b); err != nil {
				return err
			}
		}
		_, out := app.Admin().Do("GET", "/api/v1/alarms?active=true", nil)
		if out["count"] != 2.0 {
			return fmt.Errorf("active alarms: %v", out["alarms"])
		}
		return nil
	})
	return app
}

// paths lists the "path" (or key) fields of a list in an API answer.
func paths(out map[string]any, list, key string) []string {
	var ps []string
	items, _ := out[list].([]any)
	for _, it := range items {
		m, _ := it.(map[string]any)
		ps = append(ps, fmt.Sprint(m[key]))
	}
	return ps
}

func onlyGhent(t *testing.T, what string, ps []string) {
	t.Helper()
	if len(ps) == 0 {
		t.Errorf("%s: nothing of Ghent", what)
	}
	for _, p := range ps {
		if !strings.HasPrefix(p, "limeworks/ghent/") && !strings.HasPrefix(p, "limeworks/ghent-edge") {
			t.Errorf("%s: a Ghent user sees %s", what, p)
		}
	}
}

// TestScopedUserSeesOnlyTheirSite: a user scoped to Ghent reads Ghent's
// namespace, latest values, history, exports, live values, alarms,
// journal, cycles, emissions and the edges' config states, and none of
// Namur's: an out-of-scope path answers as an unknown one. The admin,
// without a scope, sees both (so the data is there to be hidden).
func TestScopedUserSeesOnlyTheirSite(t *testing.T) {
	app := scopedSite(t)
	admin := app.Admin()
	viewer := webtest.Login(t, app.Base, "ghent-viewer", "ghent-viewer-pw")

	lists := []struct {
		name, path, list, key string
	}{
		{"namespace", "/api/v1/namespace", "tags", "path"},
		{"namespace of limeworks", "/api/v1/namespace?prefix=limeworks", "tags", "path"},
		{"search", "/api/v1/namespace/search?q=kiln1", "tags", "path"},
		{"latest", "/api/v1/latest?prefix=limeworks", "tags", "path"},
		{"alarms", "/api/v1/alarms", "alarms", "path"},
		{"journal", "/api/v1/alarms/journal", "transitions", "alarm"},
		{"cycles", "/api/v1/cycles", "cycles", "machine"},
		{"emissions", "/api/v1/emissions/report", "exceedances", "alarm"},
		{"config states", "/api/v1/config/edges", "edges", "edge"},
	}
	for _, l := range lists {
		code, out := viewer.Do("GET", l.path, nil)
		if code != 200 {
			t.Errorf("%s: %d %v", l.name, code, out)
			continue
		}
		onlyGhent(t, l.name, paths(out, l.list, l.key))
		if _, all := admin.Do("GET", l.path, nil); !strings.Contains(fmt.Sprint(all[l.list]), "namur") {
			t.Errorf("%s: the admin does not see Namur: %v", l.name, all[l.list])
		}
	}
	for _, p := range []string{
		"/api/v1/namespace?prefix=limeworks/namur",
		"/api/v1/latest?prefix=" + namur,
		"/api/v1/alarms?device=" + namur,
		"/api/v1/alarms/journal?alarm=" + namur,
		"/api/v1/cycles?machine=" + namur,
	} {
		code, out := viewer.Do("GET", p, nil)
		if code != 200 || out["count"] != 0.0 {
			t.Errorf("GET %s by a Ghent user: %d %v", p, code, out)
		}
	}
	for _, p := range []string{
		"/api/v1/history?path=" + namur + "/burning_zone_temp",
		"/api/v1/history?path=" + namur + "/burning_zone_temp&format=csv",
		"/api/v1/history?path=" + namur + "/burning_zone_temp&format=parquet",
		"/api/v1/history?path=" + ghent + "/burning_zone_temp&path=" + namur + "/burning_zone_temp",
		"/api/v1/alarms/statistics?alarm=" + namur,
		"/api/v1/live?prefix=limeworks/namur",
	} {
		if code, body := viewer.Text("GET", p, "", ""); code != http.StatusNotFound {
			t.Errorf("GET %s by a Ghent user: %d %s", p, code, body)
		}
	}
	if code, body := viewer.Text("GET", "/api/v1/history?path="+ghent+"/burning_zone_temp", "", ""); code != 200 || !strings.Contains(body, "1100") {
		t.Errorf("Ghent's own history: %d %s", code, body)
	}
	for _, p := range []string{"/api/v1/config", "/api/v1/config/diff?from=1&to=1"} {
		if code, _ := viewer.Do("GET", p, nil); code != http.StatusForbidden {
			t.Errorf("GET %s by a Ghent user: %d", p, code)
		}
	}
	if code, _ := admin.Do("GET", "/api/v1/config", nil); code != 200 {
		t.Errorf("GET config by the admin: %d", code)
	}
}

// TestScopedLiveFeed: the live feed of a Ghent user carries Ghent's values
// and none of Namur's, with no prefix asked.
func TestScopedLiveFeed(t *testing.T) {
	app := scopedSite(t)
	viewer := webtest.Login(t, app.Base, "ghent-viewer", "ghent-viewer-pw")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", app.Base+"/api/v1/live", nil)
	req.Header.Set("Authorization", "Bearer "+viewer.Token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("live: %d", res.StatusCode)
	}
	js := app.Cloud.Bus.JetStream()
	go func() {
		for i := 0; ctx.Err() == nil; i++ {
			for _, dev := range []string{namur, ghent} {
				b := uns.AppendBatch(nil, []uns.Sample{{Path: uns.Path(dev + "/burning_zone_temp"), TS: time.Now(), Value: uns.Float(float64(1000 + i)), Quality: uns.Good}})
				_, _ = js.Publish(ctx, store.SubjectUNS+".limeworks.x", b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	sc := bufio.NewScanner(res.Body)
	sawGhent := 0
	for sc.Scan() && sawGhent < 5 {
		line := sc.Text()
		if !strings.HasPrefix(line, "data: ") || !strings.Contains(line, `"path"`) {
			continue
		}
		if strings.Contains(line, "limeworks/namur") {
			t.Fatalf("a Ghent user's live feed carries Namur: %s", line)
		}
		if strings.Contains(line, ghent) {
			sawGhent++
		}
	}
	if sawGhent < 5 {
		t.Fatalf("the live feed carried %d of Ghent's values: %v", sawGhent, sc.Err())
	}
}

// TestScopedUserActsOnlyOnTheirSite: a Ghent operator cannot acknowledge
// Namur's alarm, a Ghent engineer cannot write Namur's tag, change the
// fleet config, roll out to Namur or to all, or run SQL; each out-of-scope
// path answers as an unknown one. In scope, the same calls go through.
func TestScopedUserActsOnlyOnTheirSite(t *testing.T) {
	app := scopedSite(t)
	op := webtest.Login(t, app.Base, "ghent-operator", "ghent-operator-pw")
	eng := webtest.Login(t, app.Base, "ghent-engineer", "ghent-engineer-pw")

	for _, c := range []struct {
		who          *webtest.Client
		method, path string
		body         any
		want         int
	}{
		{op, "POST", "/api/v1/alarms/ack", map[string]string{"path": uns.AlarmPath(namur, "tripped")}, 404},
		{op, "POST", "/api/v1/alarms/shelve", map[string]any{"path": uns.AlarmPath(namur, "tripped"), "minutes": 10, "comment": "x"}, 404},
		{op, "POST", "/api/v1/alarms/ack", map[string]string{"path": uns.AlarmPath(ghent, "tripped")}, 200},
		{eng, "POST", "/api/v1/write", map[string]any{"path": namur + "/burning_zone_temp", "value": 900}, 404},
		{eng, "POST", "/api/v1/rollouts", map[string]any{"version": 1, "edge": "limeworks/namur-edge"}, 404},
		{eng, "POST", "/api/v1/rollouts", map[string]any{"version": 1, "all": true}, 403},
		{eng, "POST", "/api/v1/rollouts", map[string]any{"version": 1, "site": "namur"}, 403},
		{eng, "POST", "/api/v1/rollouts", map[string]any{"version": 1, "edge": "limeworks/ghent-edge"}, 201},
		{eng, "POST", "/api/v1/config/rollback", map[string]any{"version": 1}, 403},
		{eng, "POST", "/api/v1/sql", map[string]any{"query": "SELECT 1"}, 403},
	} {
		if code, out := c.who.Do(c.method, c.path, c.body); code != c.want {
			t.Errorf("%s %s %v: %d %v, want %d", c.method, c.path, c.body, code, out, c.want)
		}
	}
	if code, out := eng.Text("PUT", "/api/v1/config?message=x", "edges: []\n", ""); code != 403 {
		t.Errorf("PUT config by a Ghent engineer: %d %s", code, out)
	}
	if code, out := app.Admin().Do("POST", "/api/v1/sql", map[string]any{"query": "SELECT 1"}); code != 200 {
		t.Errorf("SQL by the admin: %d %v", code, out)
	}
}
