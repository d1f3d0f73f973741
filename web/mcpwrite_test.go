package web_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/webtest"
)

// confirmer answers an MCP client's confirmations as told, and keeps the
// questions it was asked.
type confirmer struct {
	mu     sync.Mutex
	answer string // accept, decline or cancel
	asked  []string
}

func (c *confirmer) handle(_ context.Context, req *mcp.ElicitRequest) (*mcp.ElicitResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked = append(c.asked, req.Params.Message)
	if c.answer == "accept" {
		return &mcp.ElicitResult{Action: "accept", Content: map[string]any{"confirm": true}}, nil
	}
	return &mcp.ElicitResult{Action: c.answer}, nil
}

// set sets the next answer and returns the questions asked so far.
func (c *confirmer) set(answer string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.answer = answer
	return c.asked
}

// toolNames lists the tools a session sees.
func toolNames(t *testing.T, s *mcp.ClientSession) []string {
	t.Helper()
	res, err := s.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tl := range res.Tools {
		names = append(names, tl.Name)
	}
	return names
}

// auditActions lists the audit log's entries of user as "action: result".
func auditActions(t *testing.T, app *webtest.App, user string) []string {
	t.Helper()
	code, out := app.Admin().Do("GET", "/api/v1/audit?limit=1000", nil)
	if code != 200 {
		t.Fatalf("audit: %d %v", code, out)
	}
	var acts []string
	for _, e := range out["entries"].([]any) {
		if e := e.(map[string]any); e["user"] == user {
			acts = append(acts, fmt.Sprintf("%s: %s", e["action"], e["result"]))
		}
	}
	return acts
}

func alarmState(t *testing.T, app *webtest.App, path string) string {
	t.Helper()
	_, out := app.Admin().Do("GET", "/api/v1/alarms?device="+strings.Split(path, "/_alarms/")[0], nil)
	for _, a := range out["alarms"].([]any) {
		if a := a.(map[string]any); a["path"] == path {
			return a["state"].(string)
		}
	}
	return "none"
}

// TestMCPAcknowledgeConfirmed: with writes enabled for operators and
// engineers, a viewer neither sees nor calls a write tool and an operator
// sees only acknowledge_alarm; an acknowledgement asks the user first, a
// declined one changes nothing, a confirmed one acknowledges as the UI's
// does; an alarm out of scope is refused before anything is asked; and
// every call is in the audit log.
func TestMCPAcknowledgeConfirmed(t *testing.T) {
	app := scopedSiteWith(t, web.Options{MCPWrites: []string{web.RoleOperator, web.RoleEngineer}})
	login := func(role string) string {
		return webtest.Login(t, app.Base, "ghent-"+role, "ghent-"+role+"-pw").Token
	}
	for role, want := range map[string][]string{
		web.RoleViewer:   nil,
		web.RoleOperator: {"acknowledge_alarm"},
		web.RoleEngineer: {"acknowledge_alarm", "write_tag"},
	} {
		s, err := mcpSession(t, app.Base, login(role))
		if err != nil {
			t.Fatal(err)
		}
		var writes []string
		for _, n := range toolNames(t, s) {
			if n == "acknowledge_alarm" || n == "write_tag" {
				writes = append(writes, n)
			}
		}
		slices.Sort(writes)
		if !slices.Equal(writes, want) {
			t.Errorf("%s's write tools: %v, want %v", role, writes, want)
		}
	}
	// The admin is not among the roles the config names.
	admin, err := mcpSession(t, app.Base, app.Admin().Token)
	if err != nil {
		t.Fatal(err)
	}
	if names := toolNames(t, admin); slices.Contains(names, "write_tag") || slices.Contains(names, "acknowledge_alarm") {
		t.Errorf("the admin's tools, writes enabled for operators and engineers: %v", names)
	}
	trip := uns.AlarmPath(ghent, "tripped")
	viewer, err := mcpSession(t, app.Base, login(web.RoleViewer))
	if err != nil {
		t.Fatal(err)
	}
	res, err := viewer.CallTool(context.Background(), &mcp.CallToolParams{Name: "acknowledge_alarm", Arguments: map[string]any{"path": trip}})
	if err == nil && !res.IsError {
		t.Fatalf("a viewer acknowledged: %+v", res)
	}

	var c confirmer
	op, err := mcpSessionWith(t, app.Base, login(web.RoleOperator), &mcp.ClientOptions{ElicitationHandler: c.handle})
	if err != nil {
		t.Fatal(err)
	}
	ack := func(path string) (string, bool) {
		return callTool(t, op, "acknowledge_alarm", map[string]any{"path": path, "comment": "burner checked"})
	}
	c.set("decline")
	if text, isErr := ack(trip); isErr || !strings.Contains(text, "Nothing done") {
		t.Fatalf("declined: %q %v", text, isErr)
	}
	if asked := c.set("cancel"); len(asked) != 1 || !strings.Contains(asked[0], trip) || !strings.Contains(asked[0], "burner checked") {
		t.Fatalf("the question: %q", asked)
	}
	if text, isErr := ack(trip); isErr || !strings.Contains(text, "Nothing done") {
		t.Fatalf("cancelled: %q %v", text, isErr)
	}
	if st := alarmState(t, app, trip); st != string(uns.StateUnacked) {
		t.Fatalf("after a declined and a cancelled acknowledgement the alarm is %s", st)
	}
	// Namur's alarm is out of the operator's scope: refused, nothing asked.
	c.set("accept")
	if text, isErr := ack(uns.AlarmPath(namur, "tripped")); !isErr || !strings.Contains(text, "no alarm") {
		t.Errorf("Namur's alarm: %q %v", text, isErr)
	}
	if text, isErr := ack(ghent + "/state"); !isErr || !strings.Contains(text, "not an alarm") {
		t.Errorf("a tag as an alarm: %q %v", text, isErr)
	}
	if asked := c.set("accept"); len(asked) != 2 {
		t.Fatalf("questions asked: %q, want none for refused alarms", asked)
	}
	if text, isErr := ack(trip); isErr || !strings.Contains(text, `"ack"`) {
		t.Fatalf("confirmed: %q %v", text, isErr)
	}
	if st := alarmState(t, app, trip); st != string(uns.StateAcked) {
		t.Fatalf("after the confirmed acknowledgement the alarm is %s", st)
	}
	_, journal := app.Admin().Text("GET", "/api/v1/alarms/journal?alarm="+trip, "", "")
	if !strings.Contains(journal, `"ghent-operator"`) || !strings.Contains(journal, "burner checked") {
		t.Errorf("the journal has not the acknowledgement: %s", journal)
	}
	if st := alarmState(t, app, uns.AlarmPath(namur, "tripped")); st != string(uns.StateUnacked) {
		t.Errorf("Namur's alarm is %s", st)
	}
	got := strings.Join(auditActions(t, app, "ghent-operator"), "\n")
	for _, want := range []string{"mcp acknowledge_alarm: confirmation asked", "mcp acknowledge_alarm: declined (decline): nothing done",
		"mcp acknowledge_alarm: declined (cancel): nothing done", "mcp acknowledge_alarm: refused: acknowledge_alarm: path: no alarm",
		"mcp acknowledge_alarm: 200"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit log lacks %q:\n%s", want, got)
		}
	}
}

// TestMCPConfirmationState: the state a write tool hands out with its
// question is good once, for the arguments it was asked about, and
// cannot be made up.
func TestMCPConfirmationState(t *testing.T) {
	app := scopedSiteWith(t, web.Options{MCPWrites: []string{web.RoleOperator}})
	tok := webtest.Login(t, app.Base, "ghent-operator", "ghent-operator-pw").Token
	s, err := mcpSessionWith(t, app.Base, tok, &mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	trip := uns.AlarmPath(ghent, "tripped")
	args := map[string]any{"path": trip, "comment": "seen"}
	first, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "acknowledge_alarm", Arguments: args})
	if err != nil || !first.NeedsInput() || first.RequestState == "" {
		t.Fatalf("the first call: %v %+v", err, first)
	}
	yes := mcp.InputResponseMap{"confirm": &mcp.ElicitResult{Action: "accept", Content: map[string]any{"confirm": true}}}
	again := func(args map[string]any, state string) (string, bool) {
		t.Helper()
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "acknowledge_alarm", Arguments: args, InputResponses: yes, RequestState: state})
		if err != nil {
			t.Fatal(err)
		}
		return mcpTextOf(res), res.IsError
	}
	for _, bad := range []struct {
		args  map[string]any
		state string
		want  string
	}{
		{args, "made-up", "not one this server issued"},
		{args, first.RequestState + "x", "not one this server issued"},
		{map[string]any{"path": trip, "comment": "something else"}, first.RequestState, "arguments differ"},
	} {
		if text, isErr := again(bad.args, bad.state); !isErr || !strings.Contains(text, bad.want) {
			t.Errorf("state %.20q with %v: %q, want an error with %q", bad.state, bad.args, text, bad.want)
		}
	}
	if st := alarmState(t, app, trip); st != string(uns.StateUnacked) {
		t.Fatalf("after refused states the alarm is %s", st)
	}
	if text, isErr := again(args, first.RequestState); isErr {
		t.Fatalf("the state as issued: %q", text)
	}
	if text, isErr := again(args, first.RequestState); !isErr || !strings.Contains(text, "already used") {
		t.Errorf("the state again: %q", text)
	}
	// Another user's state is not this one's.
	eng, err := mcpSessionWith(t, app.Base, app.Admin().Token, &mcp.ClientOptions{MultiRoundTrip: &mcp.MultiRoundTripOptions{Disabled: true}})
	if err != nil {
		t.Fatal(err)
	}
	if names := toolNames(t, eng); slices.Contains(names, "acknowledge_alarm") {
		t.Errorf("the admin, writes enabled for operators only, sees %v", names)
	}
}

func mcpTextOf(res *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// TestMCPWriteTag: an engineer's write through MCP, confirmed, reaches the
// device through the edge and answers the value the device reports; a
// declined one writes nothing; a tag out of scope is refused before
// anything is asked; the write is in the audit log as the UI's are.
func TestMCPWriteTag(t *testing.T) {
	hash, err := cloud.HashPassword("edge-pw")
	if err != nil {
		t.Fatal(err)
	}
	engHash, err := cloud.HashPassword("eng-pw")
	if err != nil {
		t.Fatal(err)
	}
	app := webtest.StartWith(t, cloud.Options{MQTT: cloud.BrokerOptions{Users: []cloud.MQTTUser{{Username: "e", PasswordHash: hash, Role: cloud.RoleEdge, Group: "limeworks", EdgeID: "e"}}}},
		web.Options{MCPWrites: []string{web.RoleEngineer}},
		web.User{Username: "eng", PasswordHash: engHash, Role: web.RoleEngineer, Scope: web.Scope{"limeworks/ghent"}})
	var devices []edge.Device
	for _, path := range []string{ghent, namur} {
		kiln, err := sim.New(strings.Split(path, "/")[1], sim.Settings{Interval: 50 * time.Millisecond, StartHot: true})
		if err != nil {
			t.Fatal(err)
		}
		devices = append(devices, edge.Device{ID: strings.Split(path, "/")[1], Path: uns.Path(path), Connector: kiln})
	}
	edgetest.Start(t, edge.Options{Broker: "tcp://" + app.Cloud.Broker.Addr(), Username: "e", Password: "edge-pw", Group: "limeworks", EdgeID: "e",
		PrimaryHost: "calx", DataDir: filepath.Join(t.TempDir(), "edge"), Devices: devices})
	setpoint := uns.Path(ghent + "/" + sim.TagSetpoint)
	value := func() any {
		tag, _ := app.Cloud.Registry.Get(setpoint)
		return tag.Value.Any()
	}
	edgetest.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if tag, ok := app.Cloud.Registry.Get(setpoint); !ok || !tag.HasVal || !tag.Writable {
			return fmt.Errorf("the setpoint: %+v", tag)
		}
		return nil
	})
	before := value()

	var c confirmer
	s, err := mcpSessionWith(t, app.Base, webtest.Login(t, app.Base, "eng", "eng-pw").Token, &mcp.ClientOptions{ElicitationHandler: c.handle})
	if err != nil {
		t.Fatal(err)
	}
	write := func(path string, v any) (string, bool) {
		return callTool(t, s, "write_tag", map[string]any{"path": path, "value": v})
	}
	c.set("decline")
	if text, isErr := write(string(setpoint), 17.5); isErr || !strings.Contains(text, "Nothing done") {
		t.Fatalf("declined: %q %v", text, isErr)
	}
	time.Sleep(300 * time.Millisecond) // six of the kiln's reads
	if v := value(); v != before {
		t.Fatalf("after a declined write the setpoint is %v, was %v", v, before)
	}
	if asked := c.set("accept"); len(asked) != 1 || !strings.Contains(asked[0], "17.5 t/h to "+string(setpoint)) {
		t.Fatalf("the question: %q", asked)
	}
	for path, want := range map[string]string{
		namur + "/" + sim.TagSetpoint: "no tag",
		ghent + "/" + sim.TagO2:       "read-only",
	} {
		if text, isErr := write(path, 17.5); !isErr || !strings.Contains(text, want) {
			t.Errorf("write %s: %q %v, want an error with %q", path, text, isErr, want)
		}
	}
	if text, isErr := write(string(setpoint), 17.5); isErr || !strings.Contains(text, `"value":17.5`) {
		t.Fatalf("confirmed: %q %v", text, isErr)
	}
	if v := value(); v != 17.5 {
		t.Fatalf("after the confirmed write the setpoint is %v", v)
	}
	if text, isErr := write(string(setpoint), "hot"); !isErr || !strings.Contains(text, "value: \"hot\" is not a float64") {
		t.Errorf("a string to a number: %q %v", text, isErr)
	}
	if asked := c.set("accept"); len(asked) != 2 {
		t.Errorf("questions: %q, want none for the refused writes", asked)
	}
	got := strings.Join(auditActions(t, app, "eng"), "\n")
	for _, want := range []string{"write: ok", "mcp write_tag: declined (decline): nothing done", "mcp write_tag: 200", "mcp write_tag: refused: write_tag: path: no tag"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit log lacks %q:\n%s", want, got)
		}
	}
	if strings.Count(got, "\nwrite: ")+strings.Count("\n"+got[:min(len(got), 7)], "\nwrite: ") != 1 {
		t.Errorf("the API's write entries, want the confirmed one only:\n%s", got)
	}
}

// TestMCPWriteOldProtocol: a client of a protocol before multi round-trip
// requests cannot confirm: it gets an error that says so, and nothing is
// done.
func TestMCPWriteOldProtocol(t *testing.T) {
	app := scopedSiteWith(t, web.Options{MCPWrites: []string{web.RoleOperator}})
	var c confirmer
	c.set("accept")
	cl := mcp.NewClient(&mcp.Implementation{Name: "calx-test", Version: "1"}, &mcp.ClientOptions{ElicitationHandler: c.handle})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := cl.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: app.Base + "/mcp", MaxRetries: -1, DisableStandaloneSSE: true,
		HTTPClient: &http.Client{Transport: bearer(webtest.Login(t, app.Base, "ghent-operator", "ghent-operator-pw").Token), Timeout: 30 * time.Second}},
		&mcp.ClientSessionOptions{ProtocolVersion: "2025-06-18"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	trip := uns.AlarmPath(ghent, "tripped")
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "acknowledge_alarm", Arguments: map[string]any{"path": trip}})
	if err != nil || !res.IsError || !strings.Contains(mcpTextOf(res), "MCP 2026-07-28 or later; this client speaks 2025-06-18") {
		t.Fatalf("an old client's acknowledgement: %v %+v", err, res)
	}
	if st := alarmState(t, app, trip); st != string(uns.StateUnacked) {
		t.Fatalf("the alarm is %s", st)
	}
}

// TestMCPTokenRevokedOrExpired: an API token that is revoked is refused
// at its next MCP call, and one past its expiry cannot connect.
func TestMCPTokenRevokedOrExpired(t *testing.T) {
	dir := t.TempDir()
	app := webtest.Start(t, cloud.Options{DataDir: dir})
	admin := app.Admin()
	token := func(name string) (secret, id string) {
		code, out := admin.Do("POST", "/api/v1/tokens", map[string]any{"name": name, "role": "viewer", "scope": []string{"limeworks/ghent"}, "days": 1})
		if code != 201 {
			t.Fatalf("POST tokens: %d %v", code, out)
		}
		return out["token"].(string), out["id"].(string)
	}
	revoked, revokedID := token("assistant")
	expired, expiredID := token("old-assistant")
	s, err := mcpSession(t, app.Base, revoked)
	if err != nil {
		t.Fatal(err)
	}
	if _, isErr := callTool(t, s, "list_sites", nil); isErr {
		t.Fatal("the token before its revocation")
	}
	if code, _ := admin.Do("DELETE", "/api/v1/tokens/"+revokedID, nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	if res, err := s.CallTool(context.Background(), &mcp.CallToolParams{Name: "list_sites"}); err == nil || !strings.Contains(err.Error(), "Unauthorized") {
		t.Fatalf("a revoked token's call: %v %+v", err, res)
	}
	// Past its expiry (put back in the past, as the API gives a day at
	// least), after a restart that reads the tokens again.
	ts, err := app.Cloud.APITokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range ts {
		if tk.ID == expiredID {
			tk.Expires = time.Now().Add(-time.Minute)
			if err := app.Cloud.PutAPIToken(context.Background(), tk); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := app.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	app = webtest.Start(t, cloud.Options{DataDir: dir})
	if _, err := mcpSession(t, app.Base, expired); err == nil || !strings.Contains(err.Error(), "Unauthorized") {
		t.Fatalf("an expired token connects: %v", err)
	}
}
