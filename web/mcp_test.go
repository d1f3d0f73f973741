package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/webtest"
)

// bearer adds a token to every request of an MCP client.
type bearer string

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b != "" {
		r.Header.Set("Authorization", "Bearer "+string(b))
	}
	return http.DefaultTransport.RoundTrip(r)
}

// mcpSession connects the Go SDK's MCP client to the cloud's /mcp with
// token.
func mcpSession(t *testing.T, base, token string) (*mcp.ClientSession, error) {
	t.Helper()
	return mcpSessionWith(t, base, token, nil)
}

// mcpSessionWith is mcpSession with client options.
func mcpSessionWith(t *testing.T, base, token string, opts *mcp.ClientOptions) (*mcp.ClientSession, error) {
	t.Helper()
	c := mcp.NewClient(&mcp.Implementation{Name: "calx-test", Version: "1"}, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: base + "/mcp", MaxRetries: -1, DisableStandaloneSSE: true,
		HTTPClient: &http.Client{Transport: bearer(token), Timeout: 30 * time.Second}}, nil)
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, err
}

// callTool calls a tool and returns its text and whether it is an error.
func callTool(t *testing.T, s *mcp.ClientSession, name string, args map[string]any) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: args})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return mcpTextOf(res), res.IsError
}

// TestMCPToolsAnswerAsTheAPI: an MCP client initializes, lists the read
// tools, and each one answers what the REST API answers to the same
// question with the same credentials.
func TestMCPToolsAnswerAsTheAPI(t *testing.T) {
	app := scopedSite(t)
	admin := app.Admin()
	s, err := mcpSession(t, app.Base, admin.Token)
	if err != nil {
		t.Fatal(err)
	}
	tools, err := s.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range tools.Tools {
		names = append(names, tl.Name)
		if tl.Annotations == nil || !tl.Annotations.ReadOnlyHint {
			t.Errorf("tool %s is not marked read-only", tl.Name)
		}
	}
	want := []string{"active_alarms", "alarm_journal", "alarm_statistics", "browse_namespace", "cycles", "describe_tag", "emissions_report",
		"fleet_health", "history", "latest_values", "list_sites", "search_namespace"}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("tools %v, want %v", names, want)
	}
	from := time.Now().Add(-2 * time.Hour).UTC().Format(time.RFC3339)
	to := url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	toArg, _ := url.QueryUnescape(to)
	for _, c := range []struct {
		tool  string
		args  map[string]any
		route string
	}{
		{"list_sites", nil, "/api/v1/sites"},
		{"browse_namespace", map[string]any{"prefix": "limeworks/ghent"}, "/api/v1/namespace/children?prefix=limeworks/ghent"},
		{"search_namespace", map[string]any{"q": "burning"}, "/api/v1/namespace/search?q=burning"},
		{"latest_values", map[string]any{"prefix": ghent}, "/api/v1/latest?prefix=" + ghent},
		{"describe_tag", map[string]any{"path": ghent + "/burning_zone_temp"}, "/api/v1/namespace?prefix=" + ghent + "/burning_zone_temp"},
		{"history", map[string]any{"path": []string{ghent + "/burning_zone_temp"}, "from": from, "to": toArg}, "/api/v1/history?path=" + ghent + "/burning_zone_temp&from=" + url.QueryEscape(from) + "&to=" + to},
		{"active_alarms", map[string]any{"class": "process"}, "/api/v1/alarms?class=process"},
		{"alarm_journal", map[string]any{"alarm": ghent, "from": from}, "/api/v1/alarms/journal?alarm=" + ghent + "&from=" + url.QueryEscape(from)},
		{"alarm_statistics", map[string]any{"from": from, "to": toArg}, "/api/v1/alarms/statistics?from=" + url.QueryEscape(from) + "&to=" + to},
		{"cycles", map[string]any{"machine": ghent, "from": from}, "/api/v1/cycles?machine=" + ghent + "&from=" + url.QueryEscape(from)},
		{"emissions_report", nil, "/api/v1/emissions/report"},
		{"fleet_health", nil, "/api/v1/edges"},
	} {
		text, isErr := callTool(t, s, c.tool, c.args)
		if isErr {
			t.Errorf("%s: tool error %s", c.tool, text)
			continue
		}
		code, rest := admin.Text("GET", c.route, "", "")
		if code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", c.route, code, rest)
		}
		var got, exp any
		if err := json.Unmarshal([]byte(text), &got); err != nil {
			t.Fatalf("%s: not JSON: %v: %s", c.tool, err, text)
		}
		json.Unmarshal([]byte(rest), &exp)
		if !reflect.DeepEqual(got, exp) {
			t.Errorf("%s answers\n%s\nthe API answers\n%s", c.tool, text, rest)
		}
	}
}

// TestMCPScopesAndErrors: a token scoped to Ghent learns nothing of
// Namur through any tool; no token is refused; bad arguments get a tool
// error that says what was wrong; every call is audited.
func TestMCPScopesAndErrors(t *testing.T) {
	app := scopedSite(t)
	if _, err := mcpSession(t, app.Base, ""); err == nil {
		t.Fatal("an MCP client without a token was let in")
	}
	if _, err := mcpSession(t, app.Base, "not-a-token"); err == nil {
		t.Fatal("an MCP client with a made-up token was let in")
	}
	viewer := webtest.Login(t, app.Base, "ghent-viewer", "ghent-viewer-pw")
	s, err := mcpSession(t, app.Base, viewer.Token)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"list_sites", nil},
		{"search_namespace", map[string]any{"q": "kiln1"}},
		{"browse_namespace", map[string]any{"prefix": "limeworks"}},
		{"active_alarms", nil},
		{"alarm_journal", nil},
		{"emissions_report", nil},
		{"fleet_health", nil},
	} {
		text, isErr := callTool(t, s, c.tool, c.args)
		if strings.Contains(text, "namur") {
			t.Errorf("%s shows Namur to a Ghent viewer: %s", c.tool, text)
		}
		if c.tool == "search_namespace" && (isErr || !strings.Contains(text, "ghent")) {
			t.Errorf("%s: Ghent's own tags missing: %s", c.tool, text)
		}
	}
	// Paths of Namur: unknown (404) where the API answers one thing,
	// empty where it lists.
	text, isErr := callTool(t, s, "history", map[string]any{"path": []string{namur + "/burning_zone_temp"}})
	if !isErr || !strings.Contains(text, "404") {
		t.Errorf("history of a Namur tag: %v %s, want a not-found tool error", isErr, text)
	}
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{"latest_values", map[string]any{"prefix": namur}},
		{"describe_tag", map[string]any{"path": namur + "/burning_zone_temp"}},
		{"cycles", map[string]any{"machine": namur}},
		{"browse_namespace", map[string]any{"prefix": "limeworks/namur"}},
	} {
		text, isErr := callTool(t, s, c.tool, c.args)
		var out struct {
			Count *int `json:"count"`
		}
		if isErr || json.Unmarshal([]byte(text), &out) != nil || out.Count == nil || *out.Count != 0 {
			t.Errorf("%s of a Namur path: %v %s, want an empty answer", c.tool, isErr, text)
		}
	}
	// Bad arguments: the API's message, as a tool error.
	text, isErr = callTool(t, s, "history", map[string]any{"path": []string{ghent + "/burning_zone_temp"}, "from": "yesterday"})
	if !isErr || !strings.Contains(text, "from") {
		t.Errorf("history from=yesterday: %v %s, want an error about from", isErr, text)
	}
	text, isErr = callTool(t, s, "history", map[string]any{"path": []string{ghent + "/burning_zone_temp"}, "from": "2020-01-01T00:00:00Z"})
	if !isErr || !strings.Contains(text, "limit") {
		t.Errorf("history over six years: %v %s, want an error about the limit", isErr, text)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "search_namespace", Arguments: map[string]any{"q": "x", "limit": "ten"}}); err == nil && !res.IsError {
		t.Error("limit \"ten\" accepted")
	}
	// Every call is in the audit log, with its user.
	_, out := app.Admin().Do("GET", "/api/v1/audit?limit=1000", nil)
	b, _ := json.Marshal(out)
	for _, want := range []string{`"action":"mcp search_namespace"`, `"user":"ghent-viewer"`, `"action":"mcp history"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("audit log without %s: %s", want, b)
		}
	}
}

// TestMCPResourcesAndPrompts: the namespace, templates and sites are
// resources that answer as the API, under the caller's scope; the
// prompts name what they need.
func TestMCPResourcesAndPrompts(t *testing.T) {
	app := scopedSite(t)
	viewer := webtest.Login(t, app.Base, "ghent-viewer", "ghent-viewer-pw")
	s, err := mcpSession(t, app.Base, viewer.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.ListResources(ctx, nil)
	if err != nil || len(res.Resources) != 3 {
		t.Fatalf("resources: %v %v", res, err)
	}
	for uri, route := range map[string]string{
		"calx://namespace":                 "/api/v1/namespace/children",
		"calx://namespace/limeworks/ghent": "/api/v1/namespace/children?prefix=limeworks/ghent",
		"calx://templates":                 "/api/v1/templates",
		"calx://sites":                     "/api/v1/sites",
		"calx://namespace/limeworks/namur": "/api/v1/namespace/children?prefix=limeworks/namur",
	} {
		r, err := s.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err != nil || len(r.Contents) != 1 {
			t.Fatalf("%s: %v %v", uri, r, err)
		}
		_, rest := viewer.Text("GET", route, "", "")
		var got, want any
		json.Unmarshal([]byte(r.Contents[0].Text), &got)
		json.Unmarshal([]byte(rest), &want)
		if got == nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %s, the API: %s", uri, r.Contents[0].Text, rest)
		}
		if strings.Contains(r.Contents[0].Text, "kiln1") && strings.Contains(uri, "namur") {
			t.Errorf("%s shows Namur's machines to a Ghent viewer", uri)
		}
	}
	if _, err := s.ReadResource(ctx, &mcp.ReadResourceParams{URI: "calx://nothing"}); err == nil {
		t.Error("an unknown resource was read")
	}

	prompts, err := s.ListPrompts(ctx, nil)
	if err != nil || len(prompts.Prompts) != 3 {
		t.Fatalf("prompts: %v %v", prompts, err)
	}
	p, err := s.GetPrompt(ctx, &mcp.GetPromptParams{Name: "shift_handover", Arguments: map[string]string{"site": "limeworks/ghent"}})
	if err != nil || len(p.Messages) != 1 || !strings.Contains(p.Messages[0].Content.(*mcp.TextContent).Text, "limeworks/ghent, covering the last 8 hours") {
		t.Fatalf("shift handover: %v %v", p, err)
	}
	if _, err := s.GetPrompt(ctx, &mcp.GetPromptParams{Name: "energy_per_cycle_week"}); err == nil || !strings.Contains(err.Error(), "machine is required") {
		t.Errorf("a prompt without its argument: %v", err)
	}
}

// TestMCPRateLimit: a user's calls beyond the rate get a tool error that
// says so; another user's calls go on.
func TestMCPRateLimit(t *testing.T) {
	h, err := cloud.HashPassword("other-pw")
	if err != nil {
		t.Fatal(err)
	}
	app := webtest.StartWith(t, cloud.Options{}, web.Options{MCPRate: 0.1, MCPBurst: 3}, web.User{Username: "other", PasswordHash: h, Role: web.RoleViewer})
	s, err := mcpSession(t, app.Base, app.Admin().Token)
	if err != nil {
		t.Fatal(err)
	}
	var limited int
	for range 6 {
		if text, isErr := callTool(t, s, "list_sites", nil); isErr {
			if !strings.Contains(text, "rate limit") {
				t.Fatalf("tool error %s", text)
			}
			limited++
		}
	}
	if limited < 2 {
		t.Fatalf("%d of 6 calls limited at a burst of 3", limited)
	}
	other, err := mcpSession(t, app.Base, webtest.Login(t, app.Base, "other", "other-pw").Token)
	if err != nil {
		t.Fatal(err)
	}
	if text, isErr := callTool(t, other, "list_sites", nil); isErr {
		t.Fatalf("another user is limited too: %s", text)
	}
}
