package web_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/web"
)

// mcpToolNames are the tools FuzzMCPArguments calls, the write tools with them.
var mcpToolNames = []string{"list_sites", "browse_namespace", "search_namespace", "describe_tag", "latest_values", "history",
	"active_alarms", "alarm_journal", "alarm_statistics", "cycles", "emissions_report", "fleet_health", "write_tag", "acknowledge_alarm"}

// FuzzMCPArguments calls every tool with arguments made up by the fuzzer
// (valid JSON of any shape, or not JSON at all), through the HTTP
// endpoint of a running cloud: each call is answered (a result, a tool
// error or a JSON-RPC error, never a server error or a panic), the server keeps
// answering, and what a read tool answers without error is the API's JSON.
func FuzzMCPArguments(f *testing.F) {
	for _, seed := range []struct {
		tool byte
		args string
	}{
		{0, `{}`},
		{1, `{"prefix": "limeworks/ghent"}`},
		{1, `{"prefix": "a/+/#"}`},
		{2, `{"q": "temp", "limit": 3}`},
		{2, `{"q": 5, "limit": "many"}`},
		{3, `{"path": null}`},
		{4, `{"prefix": ["x"]}`},
		{5, `{"path": ["limeworks/ghent/kilns/line1/kiln1/burning_zone_temp"], "agg": "avg", "interval": "15m"}`},
		{5, `{"path": "not-a-list", "points": -1}`},
		{5, `{"path": ["a/b"], "from": "yesterday", "to": "2026-01-01T00:00:00Z", "limit": 1e300}`},
		{6, `{"state": "on fire", "priority": "\u0000"}`},
		{7, `{"alarm": "x", "from": "2026-01-01T00:00:00Z", "to": "2020-01-01T00:00:00Z"}`},
		{8, `{"alarm": {"nested": true}}`},
		{9, `{"machine": "", "limit": 0}`},
		{10, `{"day": "2026-02-30"}`},
		{11, `{"verdict": 1.5}`},
		{12, `{"path": "limeworks/ghent/kilns/line1/kiln1/burning_zone_temp", "value": {"a": 1}}`},
		{12, `{"path": "x", "value": null}`},
		{13, `{"path": "limeworks/ghent/kilns/line1/kiln1/_alarms/tripped", "comment": 7}`},
		{13, `[1, 2, 3]`},
		{3, `not json at all`},
		{1, `{"prefix": "` + strings.Repeat("a/", 5000) + `b"}`},
		{2, `{"q": "` + strings.Repeat("[", 100) + `"}`},
		{5, `"a string"`},
	} {
		f.Add(seed.tool, []byte(seed.args))
	}
	app := scopedSiteWith(f, web.Options{MCPRate: 1e9, MCPBurst: 1 << 30, MCPWrites: []string{web.RoleAdmin}})
	admin := app.Admin()
	client := &http.Client{Timeout: 30 * time.Second}
	f.Fuzz(func(t *testing.T, tool byte, args []byte) {
		name := mcpToolNames[int(tool)%len(mcpToolNames)]
		raw := json.RawMessage(args)
		if !json.Valid(args) {
			raw, _ = json.Marshal(string(args))
		}
		body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
			"params": map[string]any{"name": name, "arguments": raw}})
		req, _ := http.NewRequest(http.MethodPost, app.Base+"/mcp", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+admin.Token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Mcp-Protocol-Version", "2025-06-18")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s(%s): %v", name, args, err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s(%s): HTTP %d %s", name, args, resp.StatusCode, out)
		}
		if resp.StatusCode != http.StatusOK {
			return // refused as a request: said in a 4xx
		}
		var rpc struct {
			Result *struct {
				IsError bool `json:"isError"`
				Content []struct {
					Text string `json:"text"`
				} `json:"content"`
			} `json:"result"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(out, &rpc); err != nil || (rpc.Result == nil) == (rpc.Error == nil) {
			t.Fatalf("%s(%s): not a JSON-RPC answer: %s", name, args, out)
		}
		if rpc.Error != nil {
			if rpc.Error.Message == "" {
				t.Fatalf("%s(%s): an error without a message: %s", name, args, out)
			}
			return
		}
		if len(rpc.Result.Content) == 0 || rpc.Result.Content[0].Text == "" {
			t.Fatalf("%s(%s): an answer without text: %s", name, args, out)
		}
		if text := rpc.Result.Content[0].Text; rpc.Result.IsError && strings.Contains(text, "internal error") {
			t.Fatalf("%s(%s): %s", name, args, text)
		}
		if text := rpc.Result.Content[0].Text; !rpc.Result.IsError && tool%byte(len(mcpToolNames)) < 12 && !json.Valid([]byte(text)) {
			t.Fatalf("%s(%s): the answer is not the API's JSON: %s", name, args, fmt.Sprint(text))
		}
	})
}
