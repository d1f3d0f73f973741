package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/web"
	"github.com/calx-iiot/calx/web/webtest"
)

// bridgeSession runs calx mcp's bridge to app's /mcp with token between
// pipes, and connects the Go SDK's client to it over stdio.
func bridgeSession(t *testing.T, app *webtest.App, token string) (*mcp.ClientSession, *bytes.Buffer, error) {
	t.Helper()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	var log bytes.Buffer
	b := &mcpBridge{url: app.Base + "/mcp", token: token, client: &http.Client{Timeout: 30 * time.Second}, log: &log}
	done := make(chan error, 1)
	go func() {
		err := b.run(context.Background(), inR, outW)
		outW.Close()
		done <- err
	}()
	t.Cleanup(func() {
		inW.Close()
		if err := <-done; err != nil {
			t.Errorf("bridge: %v", err)
		}
	})
	c := mcp.NewClient(&mcp.Implementation{Name: "calx-test", Version: "1"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.Connect(ctx, &mcp.IOTransport{Reader: outR, Writer: inW}, nil)
	return s, &log, err
}

// TestMCPBridge: an MCP client on stdio reaches the cloud's tools through
// calx mcp and gets the API's answers; a bad token is refused with a
// message that says so.
func TestMCPBridge(t *testing.T) {
	app := webtest.Start(t, cloud.Options{})
	admin := app.Admin()
	s, _, err := bridgeSession(t, app, admin.Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tools, err := s.ListTools(ctx, nil)
	if err != nil || len(tools.Tools) < 10 {
		t.Fatalf("tools through the bridge: %v, %v", tools, err)
	}
	for tool, route := range map[string]string{"list_sites": "/api/v1/sites", "fleet_health": "/api/v1/edges"} {
		res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: tool})
		if err != nil || res.IsError {
			t.Fatalf("%s: %v %+v", tool, err, res)
		}
		var got, want any
		json.Unmarshal([]byte(res.Content[0].(*mcp.TextContent).Text), &got)
		_, rest := admin.Text("GET", route, "", "")
		json.Unmarshal([]byte(rest), &want)
		if got == nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s through the bridge: %v, the API: %v", tool, got, want)
		}
	}
	s.Close()

	_, log, err := bridgeSession(t, app, "not-a-token")
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("a bad token: %v, want the 401 in the error", err)
	}
	if !strings.Contains(log.String(), "HTTP 401") {
		t.Errorf("the bridge logged %q", log.String())
	}
}

// TestMCPCommandFlags: calx mcp names what is missing.
func TestMCPCommandFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"mcp", "--url", "http://127.0.0.1:1/mcp"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "--token-file") {
		t.Fatalf("without --token-file: exit %d, %q", code, errOut.String())
	}
	empty := filepath.Join(t.TempDir(), "token")
	os.WriteFile(empty, []byte("\n"), 0o600)
	errOut.Reset()
	if code := run([]string{"mcp", "--url", "http://127.0.0.1:1/mcp", "--token-file", empty}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "empty") {
		t.Fatalf("an empty token file: exit %d, %q", code, errOut.String())
	}
}

// TestMCPBridgeWrite: a write tool through the bridge is called at the
// client's protocol (2026-07-28, whose requests name their version and
// method in headers), so it gets to the question (here: to the check
// before it, which finds no such tag); a resource is read at it too.
func TestMCPBridgeWrite(t *testing.T) {
	app := webtest.StartWith(t, cloud.Options{}, web.Options{MCPWrites: []string{web.RoleAdmin}})
	s, _, err := bridgeSession(t, app, app.Admin().Token)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := s.CallTool(ctx, &mcp.CallToolParams{Name: "write_tag", Arguments: map[string]any{"path": "limeworks/ghent/a/b/sp", "value": 1}})
	if err != nil || !res.IsError || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, `no tag "limeworks/ghent/a/b/sp"`) {
		t.Fatalf("write_tag through the bridge: %v %+v", err, res.Content[0])
	}
	if r, err := s.ReadResource(ctx, &mcp.ReadResourceParams{URI: "calx://sites"}); err != nil || len(r.Contents) != 1 || !strings.Contains(r.Contents[0].Text, `"sites"`) {
		t.Fatalf("a resource through the bridge: %v %+v", err, r)
	}
}
