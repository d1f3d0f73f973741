package web

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/calx-iiot/calx/store/historian"
)

// The MCP server: /mcp answers Model Context Protocol clients (AI
// assistants) over Streamable HTTP, on the API's listener and TLS. Every
// tool asks the REST API the same question with the caller's own
// credentials, so that a tool answers what the API answers and sees what
// the caller may see: roles, scopes, limits and errors are the API's.
// Every call is audited. The tools read; writes come later.

// mcpTool is one read tool: its name, what it answers, the API route it
// asks, and add, which adds it with its arguments' type.
type mcpTool struct {
	name, title, description, route string
	add                             func(*Server, *mcp.Server, mcpTool)
}

var mcpReadTools = []mcpTool{
	{"list_sites", "Sites", "The plant's sites with their machines (instances of templates), as the UI's home page lists them.", "/api/v1/sites", addMCPRead[mcpNoArgs]},
	{"browse_namespace", "Browse the namespace", "The children of a UNS path (enterprise/site/area/line/machine/tag): folders with their tag counts, and tags with their latest value, unit and quality. Start with no prefix.", "/api/v1/namespace/children", addMCPRead[mcpPrefixArg]},
	{"search_namespace", "Search the namespace", "Tags whose path, description or unit contain the words of q, with their latest value.", "/api/v1/namespace/search", addMCPRead[mcpSearchArgs]},
	{"describe_tag", "Describe a tag", "A tag (UNS path) and those under it: data type, unit, description, whether it is writable, its Sparkplug address (group, edge node, device, metric: the edge it comes from), and its latest value, timestamp and quality.", "/api/v1/namespace", addMCPRead[mcpPathArg]},
	{"latest_values", "Latest values", "The latest value, timestamp, quality and unit of every tag under a UNS prefix (at most 10,000 tags: give a longer prefix for more).", "/api/v1/latest", addMCPRead[mcpPrefixArg]},
	{"history", "History", "The history of one or more tags between from and to (RFC 3339; default the last hour, at most a year): raw points (limit), a downsampled trend (points), or aggregates per interval (agg: avg, min, max, first, last, count, sum; interval such as 15m).", "/api/v1/history", addMCPRead[mcpHistoryArgs]},
	{"active_alarms", "Alarms", "The alarms of the ISA-18.2 alarm system with their state (unacked, acked, rtn_unack, shelved...), priority and class; filter by device prefix, state, priority or class.", "/api/v1/alarms", addMCPRead[mcpAlarmArgs]},
	{"alarm_journal", "Alarm journal", "The alarm transitions (raise, clear, ack, shelve...) between from and to, newest first; filter by alarm prefix, event or class.", "/api/v1/alarms/journal", addMCPRead[mcpJournalArgs]},
	{"alarm_statistics", "Alarm statistics", "The ISA-18.2 performance of the alarm system between from and to: alarms per hour, peak rate, floods, chattering and stale alarms, the most frequent.", "/api/v1/alarms/statistics", addMCPRead[mcpStatsArgs]},
	{"cycles", "Cycles", "The production cycles of a machine (UNS path) between from and to, with their KPIs (energy per cycle and the like).", "/api/v1/cycles", addMCPRead[mcpCycleArgs]},
	{"emissions_report", "Emissions report", "The emission limit exceedances of a day (YYYY-MM-DD, default today), per alarm, with their duration.", "/api/v1/emissions/report", addMCPRead[mcpEmissionArgs]},
	{"fleet_health", "Fleet health", "The edges with their health verdict (ok, degraded, offline...), reasons, backlog age and connection figures; filter by verdict.", "/api/v1/edges", addMCPRead[mcpFleetArgs]},
}

// Arguments of the read tools: the fields' json names are the routes'
// query parameters.
type (
	// mcpSpan is a time range; the API's default is the last day.
	mcpSpan struct {
		From string `json:"from,omitempty" jsonschema:"start, RFC 3339 (default a day before to)"`
		To   string `json:"to,omitempty" jsonschema:"end, RFC 3339 (default now)"`
	}
	mcpNoArgs    struct{}
	mcpPrefixArg struct {
		Prefix string `json:"prefix,omitempty" jsonschema:"a UNS path such as limeworks/ghent; empty for the top"`
	}
	mcpPathArg struct {
		Path string `json:"path" query:"prefix" jsonschema:"the tag's UNS path"`
	}
	mcpSearchArgs struct {
		Q     string `json:"q" jsonschema:"words to look for in the tags' paths, descriptions and units"`
		Limit int    `json:"limit,omitempty" jsonschema:"at most this many tags (default 50)"`
	}
	mcpHistoryArgs struct {
		Path     []string `json:"path" jsonschema:"the UNS paths of the tags"`
		From     string   `json:"from,omitempty" jsonschema:"start, RFC 3339 (default an hour before to)"`
		To       string   `json:"to,omitempty" jsonschema:"end, RFC 3339 (default now)"`
		Points   int      `json:"points,omitempty" jsonschema:"a downsampled trend of about this many points"`
		Agg      string   `json:"agg,omitempty" jsonschema:"avg, min, max, first, last, count or sum per interval"`
		Interval string   `json:"interval,omitempty" jsonschema:"the aggregates' bucket, such as 15m or 1h"`
		Limit    int      `json:"limit,omitempty" jsonschema:"at most this many raw points per tag"`
	}
	mcpAlarmArgs struct {
		Device   string `json:"device,omitempty" jsonschema:"a UNS prefix of the devices"`
		State    string `json:"state,omitempty" jsonschema:"unacked, acked, rtn_unack, shelved, suppressed or normal"`
		Priority string `json:"priority,omitempty" jsonschema:"low, medium, high or critical"`
		Class    string `json:"class,omitempty" jsonschema:"the alarms' class, such as process or emission"`
	}
	mcpJournalArgs struct {
		Alarm string `json:"alarm,omitempty" jsonschema:"a UNS prefix of the alarms"`
		Event string `json:"event,omitempty" jsonschema:"raise, clear, ack, shelve, unshelve..."`
		Class string `json:"class,omitempty" jsonschema:"the alarms' class"`
		mcpSpan
		Limit int `json:"limit,omitempty" jsonschema:"at most this many transitions"`
	}
	mcpStatsArgs struct {
		Alarm string `json:"alarm,omitempty" jsonschema:"a UNS prefix of the alarms"`
		Class string `json:"class,omitempty" jsonschema:"the alarms' class"`
		mcpSpan
	}
	mcpCycleArgs struct {
		Machine string `json:"machine" jsonschema:"the UNS path of the machine"`
		Name    string `json:"name,omitempty" jsonschema:"the cycle's name"`
		mcpSpan
		Limit int `json:"limit,omitempty" jsonschema:"at most this many cycles"`
	}
	mcpEmissionArgs struct {
		Day   string `json:"day,omitempty" jsonschema:"YYYY-MM-DD (default today)"`
		Class string `json:"class,omitempty" jsonschema:"the alarms' class (default emission)"`
	}
	mcpFleetArgs struct {
		Verdict string `json:"verdict,omitempty" jsonschema:"only edges with this verdict"`
	}
)

// newMCP makes the MCP handler: a server for each role, with the read
// tools and the write tools the role may use, chosen by the caller's.
func (s *Server) newMCP() http.Handler {
	servers := map[string]*mcp.Server{}
	for _, role := range []string{RoleViewer, RoleOperator, RoleEngineer, RoleAdmin} {
		srv := mcp.NewServer(&mcp.Implementation{Name: "calx", Title: "Calx plant data"}, &mcp.ServerOptions{
			Instructions: "Calx holds a plant's Unified Namespace (enterprise/site/area/line/machine/tag), its history, alarms, cycles and emissions. " +
				"Find tags with search_namespace or browse_namespace, then read latest_values or history. Times are RFC 3339 with a zone.",
		})
		for _, t := range mcpReadTools {
			t.add(s, srv, t)
		}
		s.addMCPWrites(srv, role)
		s.addMCPResources(srv)
		addMCPPrompts(srv)
		servers[role] = srv
	}
	// Stateless, JSON answers: each call is one HTTP request, authenticated
	// on its own (requireAPI before this), and no stream outlives it.
	return mcp.NewStreamableHTTPHandler(func(r *http.Request) *mcp.Server {
		sess, _ := r.Context().Value(ctxKey{}).(session)
		return cmp.Or(servers[sess.role], servers[RoleViewer])
	}, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
}

// addMCPRead adds tool t, whose arguments are In's fields: their json
// names are the route's query parameters.
func addMCPRead[In any](s *Server, srv *mcp.Server, t mcpTool) {
	mcp.AddTool(srv, &mcp.Tool{Name: t.name, Title: t.title, Description: t.description, Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true}},
		func(ctx context.Context, req *mcp.CallToolRequest, in In) (*mcp.CallToolResult, any, error) {
			return s.mcpSafe(t.name, func() *mcp.CallToolResult { return s.mcpAsk(ctx, req, t, queryOf(in)) }), nil, nil
		})
}

// mcpSafe runs a tool's call: a panic in it is logged and answered as a
// tool error, not the end of the process (the SDK runs calls on goroutines
// of its own, where the HTTP server's recovery does not reach).
func (s *Server) mcpSafe(tool string, call func() *mcp.CallToolResult) (res *mcp.CallToolResult) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("mcp tool panicked", "tool", tool, "panic", p, "stack", string(debug.Stack()))
			res = mcpError(tool + ": internal error (logged on the server)")
		}
	}()
	return call()
}

// queryOf makes query parameters of a tool's arguments: each non-empty
// field under its json name (or its query tag's), a list as the
// parameter repeated.
func queryOf(in any) url.Values {
	q := url.Values{}
	addQuery(q, reflect.ValueOf(in))
	return q
}

func addQuery(q url.Values, v reflect.Value) {
	for i := range v.NumField() {
		tag := v.Type().Field(i).Tag
		name, _, _ := strings.Cut(tag.Get("json"), ",")
		if q := tag.Get("query"); q != "" { // the route calls it otherwise
			name = q
		}
		switch f := v.Field(i); f.Kind() {
		case reflect.Struct: // an embedded one, such as mcpSpan
			addQuery(q, f)
		case reflect.String:
			if f.String() != "" {
				q.Set(name, f.String())
			}
		case reflect.Int:
			if f.Int() != 0 {
				q.Set(name, strconv.FormatInt(f.Int(), 10))
			}
		case reflect.Slice:
			for k := range f.Len() {
				q.Add(name, f.Index(k).String())
			}
		}
	}
}

// mcpAsk asks the API t's question with the caller's credentials and
// returns its answer: the JSON as text, or the API's error as a tool
// error.
func (s *Server) mcpAsk(ctx context.Context, req *mcp.CallToolRequest, t mcpTool, q url.Values) *mcp.CallToolResult {
	code, body := s.mcpAPI(ctx, req.Extra, "mcp "+t.name, http.MethodGet, t.route, q, nil)
	if code >= 400 {
		return mcpError(fmt.Sprintf("%s: %s (HTTP %d)", t.name, apiErrorText(code, body), code))
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(body)}}}
}

// apiErrorText is the message of an API error answer.
func apiErrorText(code int, body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		return http.StatusText(code)
	}
	return e.Error
}

// mcpCredentials copies the credentials of an MCP request's HTTP headers
// (its token or session cookie) into h.
func mcpCredentials(extra *mcp.RequestExtra, h http.Header) {
	if extra == nil || extra.Header == nil {
		return
	}
	for _, k := range []string{"Authorization", "Cookie"} {
		if v := extra.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
}

// mcpUser is the user of an MCP request's credentials.
func (s *Server) mcpUser(extra *mcp.RequestExtra) string {
	hr := &http.Request{Header: http.Header{}}
	mcpCredentials(extra, hr.Header)
	return s.userOf(hr)
}

// userOf is the user of a request's token or session, or "".
func (s *Server) userOf(r *http.Request) string {
	if sess, ok := s.auth.check(token(r)); ok {
		return sess.user
	}
	return ""
}

// mcpAPI asks route (with query q and, to POST, body) with the
// credentials of the MCP request's HTTP headers, through the router (so
// with the API's authentication, roles, scopes and limits), within the
// caller's rate, and audits the call as action unless that is empty; it
// returns the answer's status and body.
func (s *Server) mcpAPI(ctx context.Context, extra *mcp.RequestExtra, action, method, route string, q url.Values, body []byte) (int, []byte) {
	// A request of its own, routed from the top: without the router's
	// state of the /mcp request in its context.
	hr, err := http.NewRequestWithContext(context.WithValue(ctx, chi.RouteCtxKey, (*chi.Context)(nil)), method, route+"?"+q.Encode(), bytes.NewReader(body))
	if err != nil {
		return http.StatusBadRequest, errorJSON(err.Error())
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	mcpCredentials(extra, hr.Header)
	user := s.userOf(hr)
	var code int
	var out []byte
	if !s.mcpRate.allow(user) {
		code, out = http.StatusTooManyRequests, errorJSON(fmt.Sprintf("rate limit: at most %g calls a second (%d at once) per user; wait a moment and ask again", s.mcpRate.rate, s.mcpRate.burst))
	} else {
		rec := httptest.NewRecorder()
		s.router.ServeHTTP(rec, hr)
		code, out = rec.Code, rec.Body.Bytes()
	}
	if action != "" {
		s.auditMCP(ctx, user, action, q, fmt.Sprintf("%d, %d bytes", code, len(out)))
	}
	return code, out
}

func errorJSON(msg string) []byte {
	b, _ := json.Marshal(map[string]string{"error": msg})
	return b
}

func mcpError(msg string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: msg}}}
}

// auditMCP writes an MCP call to the audit log: who, which tool or
// resource, its arguments, and the answer's status and size.
func (s *Server) auditMCP(ctx context.Context, user, tool string, q url.Values, result string) {
	e := historian.AuditEntry{TS: time.Now(), User: user, Action: tool, Value: q.Encode(), Result: result}
	if err := s.c.audit.Audit(context.WithoutCancel(ctx), e); err != nil {
		s.log.Error("audit entry not stored", "err", err)
	}
}
