package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/calx-iiot/calx/cloud"
	_ "github.com/calx-iiot/calx/connector/all" // the fleet config names connectors
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/webtest"
)

// TestFleetConfigAPI: versions go in through the API with validation and
// role checks, are listed, diffed, rolled back and rolled out, and every
// change is in the audit log.
func TestFleetConfigAPI(t *testing.T) {
	viewer, _ := cloud.HashPassword("viewer-pw")
	app := webtest.Start(t, cloud.Options{}, web.User{Username: "vera", PasswordHash: viewer, Role: web.RoleViewer})
	base := app.Base
	c := app.Admin()
	put := func(c *webtest.Client, body, msg string) (int, string) {
		t.Helper()
		return c.Text("PUT", "/api/v1/config?message="+msg, body, "")
	}
	if code, out := c.Do("GET", "/api/v1/config", nil); code != 404 {
		t.Fatalf("config before any: %d %v", code, out)
	}
	fleet, err := os.ReadFile("../examples/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if code, out := put(c, string(fleet), "first"); code != 201 || !strings.Contains(out, `"version":1`) {
		t.Fatalf("PUT config: %d %s", code, out)
	}
	broken := strings.Replace(string(fleet), "template: lime-kiln-fast", "template: lime-kiln-faster", 1)
	if code, out := put(c, broken, "typo"); code != 400 || !strings.Contains(out, `template \"lime-kiln-faster\": no such template`) {
		t.Fatalf("PUT a broken config: %d %s", code, out)
	}
	changed := strings.Replace(string(fleet), "mean_time_between_trips: 15m", "mean_time_between_trips: 20m", 1)
	if code, out := put(c, changed, "trips"); code != 201 || !strings.Contains(out, `"version":2`) {
		t.Fatalf("PUT a second version: %d %s", code, out)
	}
	v := &webtest.Client{T: t, Base: base}
	code, out := v.Do("POST", "/api/v1/login", map[string]string{"username": "vera", "password": "viewer-pw"})
	if code != 200 {
		t.Fatalf("viewer login: %d %v", code, out)
	}
	v.Token, _ = out["token"].(string)
	if code, out := put(v, string(fleet), "viewer"); code != 403 {
		t.Fatalf("a viewer PUT config: %d %s", code, out)
	}
	if code, out := v.Do("GET", "/api/v1/config/versions", nil); code != 200 || out["count"] != 2.0 {
		t.Fatalf("versions: %d %v", code, out)
	}
	code, out = v.Do("GET", "/api/v1/config/diff?from=1&to=2", nil)
	if d, _ := out["diff"].(string); code != 200 || !strings.Contains(d, "-") || !strings.Contains(d, "mean_time_between_trips: 20m") {
		t.Fatalf("diff: %d %v", code, out)
	}
	if code, out := c.Do("GET", "/api/v1/config/diff?from=x", nil); code != 400 {
		t.Fatalf("diff from=x: %d %v", code, out)
	}
	if code, out := c.Do("POST", "/api/v1/config/rollback", map[string]any{"version": 1}); code != 201 || out["version"] != 3.0 {
		t.Fatalf("rollback: %d %v", code, out)
	}
	if code, out := c.Do("POST", "/api/v1/config/rollback", map[string]any{"version": 9}); code != 404 {
		t.Fatalf("rollback to a version that is not: %d %v", code, out)
	}
	code, out = c.Do("POST", "/api/v1/rollouts", map[string]any{"version": 3, "template": "lime-kiln"})
	if code != 201 {
		t.Fatalf("rollout: %d %v", code, out)
	}
	if edges, _ := out["edges"].([]any); len(edges) != 2 {
		t.Fatalf("rollout by template reached %v", out["edges"])
	}
	id, _ := out["rollout"].(string)
	if code, out := v.Do("GET", "/api/v1/rollouts/"+id, nil); code != 200 || out["total"] != 2.0 {
		t.Fatalf("rollout progress: %d %v", code, out)
	}
	if code, out := c.Do("POST", "/api/v1/rollouts", map[string]any{"version": 3, "site": "paris"}); code != 400 {
		t.Fatalf("rollout to no edge: %d %v", code, out)
	}
	if code, out := c.Do("POST", "/api/v1/rollouts", map[string]any{"version": 3}); code != 400 {
		t.Fatalf("rollout without a selection: %d %v", code, out)
	}
	if code, out := v.Do("GET", "/api/v1/instances", nil); code != 200 || out["count"] != 4.0 {
		t.Fatalf("instances: %d %v", code, out)
	}
	if code, out := v.Do("GET", "/api/v1/sites", nil); code != 200 || out["count"] != 2.0 {
		t.Fatalf("sites: %d %v", code, out)
	}
	code, out = c.Do("GET", "/api/v1/audit", nil)
	if code != 200 {
		t.Fatalf("audit: %d %v", code, out)
	}
	var actions []string
	for _, e := range out["entries"].([]any) {
		actions = append(actions, e.(map[string]any)["action"].(string))
	}
	for _, want := range []string{"config-save", "config-rollback", "rollout"} {
		if !strings.Contains(strings.Join(actions, " "), want) {
			t.Errorf("audit lacks %s: %v", want, actions)
		}
	}
}

// TestFleetSecretsRedacted: passwords, tokens and headers of the fleet
// config never reach an API reader (config, diff, templates, instances),
// a config read and sent back keeps them, and the edge's own config still
// carries them.
func TestFleetSecretsRedacted(t *testing.T) {
	app := webtest.Start(t, cloud.Options{})
	c := app.Admin()
	const cfg = `templates:
  - name: mes
    connector: rest
    params: {token: tok-SECRET-1}
    settings:
      url: https://mes.example.internal/api
      bearer_token: ${token}
      headers: {X-Api-Key: hdr-SECRET-2}
      interval: 30s
      tags: [{name: qty, path: qty}]
edges:
  - group: g
    edge_id: e1
    devices:
      - id: mes1
        path: ent/site/area/line/mes1
        template: mes
        params: {token: tok-SECRET-3}
      - id: broker1
        path: ent/site/area/line/broker1
        connector: mqtt
        settings: {broker: "tcp://10.0.0.9:1883", username: u, password: pw-SECRET-4, tags: [{name: t, topic: a/b}]}
`
	send := func(body string) (int, string) {
		t.Helper()
		return c.Text("PUT", "/api/v1/config?message=m", body, "")
	}
	if code, out := send(cfg); code != 201 {
		t.Fatalf("PUT: %d %s", code, out)
	}
	get := func(path string, accept string) string {
		t.Helper()
		code, b := c.Text("GET", path, "", accept)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", path, code, b)
		}
		return b
	}
	shown := get("/api/v1/config", "application/yaml")
	// Send back what was shown with one change: the secrets stay.
	if code, out := send(strings.Replace(shown, "interval: 30s", "interval: 20s", 1)); code != 201 {
		t.Fatalf("PUT of the redacted config: %d %s", code, out)
	}
	for _, path := range []string{"/api/v1/config", "/api/v1/config?version=1", "/api/v1/config/diff?from=1&to=2", "/api/v1/templates", "/api/v1/instances"} {
		body := get(path, "")
		if strings.Contains(body, "SECRET") {
			t.Errorf("%s shows a secret: %s", path, body)
		}
		if path != "/api/v1/config/diff?from=1&to=2" && !strings.Contains(body, "redacted") {
			t.Errorf("%s shows no redacted value: %s", path, body)
		}
	}
	ver, err := app.Cloud.Fleet.Get(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"tok-SECRET-1", "hdr-SECRET-2", "tok-SECRET-3", "pw-SECRET-4", "interval: 20s"} {
		if !strings.Contains(ver.YAML, s) {
			t.Errorf("version 2 lost %q:\n%s", s, ver.YAML)
		}
	}
	// A redacted value where the config it replaces has none is refused.
	if code, out := send(strings.Replace(cfg, "pw-SECRET-4", "<redacted>", 1) + "\n# x\n"); code != 201 {
		t.Fatalf("PUT with a known redacted value: %d %s", code, out)
	}
	if code, out := send(strings.Replace(cfg, "username: u,", "username: u, api_token: <redacted>,", 1)); code != 400 || !strings.Contains(out, "redacted") {
		t.Fatalf("PUT with an unknown redacted value: %d %s", code, out)
	}
}

// TestValidateConfig: the editor's check gives each problem with its line
// when the parser knows it, stores nothing, and is for those who may save.
func TestValidateConfig(t *testing.T) {
	viewer, _ := cloud.HashPassword("viewer-pw")
	app := webtest.Start(t, cloud.Options{}, web.User{Username: "vera", PasswordHash: viewer, Role: web.RoleViewer})
	admin := app.Admin()
	fleet, err := os.ReadFile("../examples/fleet.yaml")
	if err != nil {
		t.Fatal(err)
	}
	validate := func(c *webtest.Client, body string) (int, map[string]any) {
		code, out := c.Text("POST", "/api/v1/config/validate", body, "")
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("%d %s", code, out)
		}
		return code, m
	}
	if code, out := validate(admin, string(fleet)); code != 200 || out["valid"] != true {
		t.Errorf("the example fleet: %d %v", code, out)
	}
	code, out := validate(admin, "templates:\n  - name: a\n    conector: sim\n")
	errs, _ := out["errors"].([]any)
	if code != 200 || out["valid"] != false || len(errs) != 1 || errs[0].(map[string]any)["line"] != 3.0 ||
		!strings.Contains(errs[0].(map[string]any)["message"].(string), "conector") {
		t.Errorf("an unknown key: %d %v", code, out)
	}
	_, out = validate(admin, "edges:\n  - {group: g, edge_id: e, devices: [{id: d, path: a/b/c, template: zz}]}\n")
	if errs, _ := out["errors"].([]any); out["valid"] != false || len(errs) != 1 || !strings.Contains(fmt.Sprint(errs), `template "zz"`) {
		t.Errorf("an unknown template: %v", out)
	}
	if code, out := admin.Do("GET", "/api/v1/config/versions", nil); code != 200 || out["count"] != 0.0 {
		t.Errorf("validation stored a version: %d %v", code, out)
	}
	vera := webtest.Login(t, app.Base, "vera", "viewer-pw")
	if code, _ := validate(vera, string(fleet)); code != 403 {
		t.Errorf("a viewer validates: %d", code)
	}
}

// TestDashboards: an engineer sets the KPIs and tiles of a template's
// machines; a viewer may read them and not set them; bad names are refused.
func TestDashboards(t *testing.T) {
	viewer, _ := cloud.HashPassword("viewer-pw")
	app := webtest.Start(t, cloud.Options{}, web.User{Username: "vera", PasswordHash: viewer, Role: web.RoleViewer})
	admin := app.Admin()
	vera := webtest.Login(t, app.Base, "vera", "viewer-pw")
	if code, out := vera.Do("GET", "/api/v1/dashboards", nil); code != 200 || out["count"] != 0.0 || out["dashboards"] == nil {
		t.Errorf("no dashboards yet: %d %v", code, out)
	}
	body := map[string]any{"kpis": []string{"state", "production_rate"}, "tiles": []string{"burning_zone_temp", "o2"}}
	if code, out := vera.Do("PUT", "/api/v1/dashboards/lime-kiln", body); code != 403 {
		t.Errorf("a viewer sets a dashboard: %d %v", code, out)
	}
	if code, out := admin.Do("PUT", "/api/v1/dashboards/lime-kiln", body); code != 200 || out["updated_by"] != "admin" {
		t.Fatalf("PUT dashboard: %d %v", code, out)
	}
	_, out := vera.Do("GET", "/api/v1/dashboards", nil)
	if fmt.Sprint(out["dashboards"]) == "" || !strings.Contains(fmt.Sprint(out), "production_rate") || out["count"] != 1.0 {
		t.Errorf("dashboards: %v", out)
	}
	for _, bad := range []map[string]any{
		{"kpis": []string{"a/+/b"}},
		{"kpis": []string{"1", "2", "3", "4", "5", "6", "7", "8", "9"}},
		{"tiles": []string{"ok"}, "color": "red"},
	} {
		if code, out := admin.Do("PUT", "/api/v1/dashboards/lime-kiln", bad); code != 400 {
			t.Errorf("%v: %d %v", bad, code, out)
		}
	}
	if code, _ := admin.Do("PUT", "/api/v1/dashboards/a+b", body); code != 400 {
		t.Errorf("a template name with a wildcard: %d", code)
	}
}

// TestClusterAPI: a cloud without a cluster is a node alone, leading, with
// one copy of the backbone; viewers do not see the nodes.
func TestClusterAPI(t *testing.T) {
	h, err := cloud.HashPassword("viewer-pw")
	if err != nil {
		t.Fatal(err)
	}
	app := webtest.Start(t, cloud.Options{}, web.User{Username: "v", PasswordHash: h, Role: web.RoleViewer})
	code, out := app.Admin().Do("GET", "/api/v1/cluster", nil)
	nodes, _ := out["nodes"].([]any)
	if code != 200 || out["replicas"] != 1.0 || len(nodes) != 1 || out["node"] != "calx" {
		t.Fatalf("cluster: %d %v", code, out)
	}
	if n := nodes[0].(map[string]any); n["leader"] != true || n["up"] != true || n["self"] != true {
		t.Errorf("the node alone: %v", n)
	}
	if code, _ := webtest.Login(t, app.Base, "v", "viewer-pw").Do("GET", "/api/v1/cluster", nil); code != 403 {
		t.Errorf("a viewer asks for the nodes: %d", code)
	}
}
