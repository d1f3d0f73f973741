package web

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/calx-iiot/calx/uns"
)

// Writes through MCP: write_tag and acknowledge_alarm. They are off unless
// the config names the roles that may use them (http.mcp.writes), and a
// caller whose role may not use one does not see it listed. Each asks the
// user to confirm what it is about to do, as an elicitation carried in the
// tool's result (MCP's multi round-trip requests, which need no session on
// the server): the client shows the question and calls the tool again with
// the answer. Only then does it take the API's own route with the caller's
// credentials, so with the API's checks and the same audit entry as a
// write from the UI.

// mcpWrite is a write tool: its route and the roles whose API takes it.
type mcpWrite struct {
	name, title, description, route string
	roles                           []string
	add                             func(*Server, *mcp.Server, mcpWrite)
}

var mcpWriteTools = []mcpWrite{
	{"write_tag", "Write a tag", "Sets a writable tag (a setpoint, a command) to a value: the user is asked to confirm, then the edge writes it to the device and the answer is the value the device reports back.",
		"/api/v1/write", []string{RoleAdmin, RoleEngineer}, addMCPWrite[mcpWriteArgs]},
	{"acknowledge_alarm", "Acknowledge an alarm", "Acknowledges an alarm (ISA-18.2) with a comment for the journal, once the user confirms.",
		"/api/v1/alarms/ack", []string{RoleAdmin, RoleEngineer, RoleOperator}, addMCPWrite[mcpAckArgs]},
}

type (
	mcpWriteArgs struct {
		Path  string `json:"path" jsonschema:"the tag's UNS path"`
		Value any    `json:"value" jsonschema:"the new value: a number, true or false, or text, as the tag's data type"`
	}
	mcpAckArgs struct {
		Path    string `json:"path" jsonschema:"the alarm: <device path>/_alarms/<name>, as active_alarms lists it"`
		Comment string `json:"comment,omitempty" jsonschema:"why, for the alarm journal"`
	}
)

// mcpWriteRoles checks the roles the config lets write through MCP.
func mcpWriteRoles(roles []string) error {
	for _, r := range roles {
		switch r {
		case RoleAdmin, RoleEngineer, RoleOperator:
		case RoleViewer:
			return errors.New("mcp writes: viewers neither write nor acknowledge; name operator, engineer or admin")
		default:
			return fmt.Errorf("mcp writes: unknown role %q (operator, engineer or admin)", r)
		}
	}
	return nil
}

// addMCPWrites adds to srv the write tools that role may use.
func (s *Server) addMCPWrites(srv *mcp.Server, role string) {
	if !slices.Contains(s.mcpWriters, role) {
		return
	}
	for _, t := range mcpWriteTools {
		if slices.Contains(t.roles, role) {
			t.add(s, srv, t)
		}
	}
}

// mcpConfirmProtocol is the first MCP version with input requests in
// results (multi round-trip requests), which the confirmations are.
const mcpConfirmProtocol = "2026-07-28"

// mcpProtocol is the MCP version of a call.
func mcpProtocol(req *mcp.CallToolRequest) string {
	if req.Session == nil {
		return ""
	}
	if p := req.Session.InitializeParams(); p != nil {
		return p.ProtocolVersion
	}
	return ""
}

// mcpConfirmTTL is how long a user has to answer a confirmation.
const mcpConfirmTTL = 5 * time.Minute

// confirmSchema is what a confirmation asks: a yes or no.
var confirmSchema = map[string]any{
	"type":       "object",
	"properties": map[string]any{"confirm": map[string]any{"type": "boolean", "title": "Confirm", "description": "Yes to go ahead"}},
	"required":   []string{"confirm"},
}

func addMCPWrite[In any](s *Server, srv *mcp.Server, t mcpWrite) {
	destructive := true
	mcp.AddTool(srv, &mcp.Tool{Name: t.name, Title: t.title, Description: t.description,
		Annotations: &mcp.ToolAnnotations{DestructiveHint: &destructive}},
		func(ctx context.Context, req *mcp.CallToolRequest, in In) (*mcp.CallToolResult, any, error) {
			return s.mcpSafe(t.name, func() *mcp.CallToolResult { return s.mcpWriteCall(ctx, req, t, in) }), nil, nil
		})
}

// mcpWriteCall is a call of write tool t with arguments in: the first asks
// for confirmation, the repeated one with the answer writes.
func (s *Server) mcpWriteCall(ctx context.Context, req *mcp.CallToolRequest, t mcpWrite, in any) *mcp.CallToolResult {
	user := s.mcpUser(req.Extra)
	args, err := json.Marshal(in)
	if err != nil {
		return mcpError(fmt.Sprintf("%s: arguments: %v", t.name, err))
	}
	action := "mcp " + t.name
	q := url.Values{"arguments": {string(args)}}
	if v := mcpProtocol(req); v < mcpConfirmProtocol {
		s.auditMCP(ctx, user, action, q, "refused: protocol "+v)
		return mcpError(fmt.Sprintf("%s asks the user to confirm with an input request of MCP %s or later; this client speaks %s, so it cannot confirm, and nothing was done",
			t.name, mcpConfirmProtocol, cmp.Or(v, "an unknown version")))
	}
	if req.Params.RequestState == "" {
		question, bad := s.mcpQuestion(ctx, req.Extra, t, in)
		if bad != nil {
			s.auditMCP(ctx, user, action, q, "refused: "+mcpText(bad))
			return bad
		}
		s.auditMCP(ctx, user, action, q, "confirmation asked")
		return &mcp.CallToolResult{
			InputRequests: mcp.InputRequestMap{"confirm": &mcp.ElicitParams{Message: question, RequestedSchema: confirmSchema}},
			RequestState:  s.confirms.issue(user, t.name, args),
		}
	}
	if err := s.confirms.redeem(ctx, req.Params.RequestState, user, t.name, args); err != nil {
		s.auditMCP(ctx, user, action, q, "refused: "+err.Error())
		return mcpError(fmt.Sprintf("%s: confirmation: %v; call the tool again to be asked anew", t.name, err))
	}
	answer, _ := req.Params.InputResponses["confirm"].(*mcp.ElicitResult)
	if answer == nil || answer.Action != "accept" || answer.Content["confirm"] != true {
		why := "no answer"
		if answer != nil {
			why = answer.Action
			if answer.Action == "accept" {
				why = "not confirmed"
			}
		}
		s.auditMCP(ctx, user, action, q, "declined ("+why+"): nothing done")
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprintf("Nothing done: the user did not confirm (%s).", why)}}}
	}
	code, body := s.mcpAPI(ctx, req.Extra, action, http.MethodPost, t.route, q, args)
	if code >= 400 {
		return mcpError(fmt.Sprintf("%s: %s (HTTP %d)", t.name, apiErrorText(code, body), code))
	}
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: string(body)}}}
}

// mcpQuestion is what the user is asked to confirm for a call of t, from
// the API's answer about its target (so a path out of the caller's scope
// or unknown is an error before anything is asked).
func (s *Server) mcpQuestion(ctx context.Context, extra *mcp.RequestExtra, t mcpWrite, in any) (string, *mcp.CallToolResult) {
	// get asks route of the API into out; a refusal is the call's error.
	get := func(route string, q url.Values, out any) *mcp.CallToolResult {
		code, body := s.mcpAPI(ctx, extra, "", http.MethodGet, route, q, nil)
		if code >= 400 {
			return mcpError(fmt.Sprintf("%s: path: %s (HTTP %d)", t.name, apiErrorText(code, body), code))
		}
		if err := json.Unmarshal(body, out); err != nil {
			return mcpError(fmt.Sprintf("%s: %s answered: %v", t.name, route, err))
		}
		return nil
	}
	switch a := in.(type) {
	case mcpWriteArgs:
		var ns struct {
			Tags []struct {
				Path     string `json:"path"`
				Unit     string `json:"unit"`
				DataType string `json:"datatype"`
				Writable bool   `json:"writable"`
				Value    any    `json:"value"`
			} `json:"tags"`
		}
		if bad := get("/api/v1/namespace", url.Values{"prefix": {a.Path}}, &ns); bad != nil {
			return "", bad
		}
		for _, tag := range ns.Tags {
			if tag.Path != a.Path {
				continue
			}
			if !tag.Writable {
				return "", mcpError(fmt.Sprintf("%s: path: tag %q is read-only", t.name, a.Path))
			}
			raw, _ := json.Marshal(a.Value)
			if _, err := parseValue(raw, dataTypeNamed(tag.DataType)); err != nil {
				return "", mcpError(fmt.Sprintf("%s: value: %v", t.name, err))
			}
			now := "no value yet"
			if tag.Value != nil {
				now = strings.TrimSpace(fmt.Sprint(tag.Value, " ", tag.Unit))
			}
			return fmt.Sprintf("Write %v %s to %s (now %s)?", a.Value, tag.Unit, a.Path, now), nil
		}
		return "", mcpError(fmt.Sprintf("%s: path: no tag %q in the namespace", t.name, a.Path))
	case mcpAckArgs:
		dev, _, ok := strings.Cut(a.Path, "/_alarms/")
		if !ok {
			return "", mcpError(fmt.Sprintf("%s: path: %q is not an alarm's path (<device>/_alarms/<name>)", t.name, a.Path))
		}
		var alarms struct {
			Alarms []struct {
				Path     string `json:"path"`
				State    string `json:"state"`
				Priority string `json:"priority"`
			} `json:"alarms"`
		}
		if bad := get("/api/v1/alarms", url.Values{"device": {dev}}, &alarms); bad != nil {
			return "", bad
		}
		for _, al := range alarms.Alarms {
			if al.Path == a.Path {
				return fmt.Sprintf("Acknowledge the %s alarm %s (%s) with the comment %q?", al.Priority, a.Path, al.State, a.Comment), nil
			}
		}
		return "", mcpError(fmt.Sprintf("%s: path: no alarm %q", t.name, a.Path))
	}
	return "", mcpError(t.name + ": unknown arguments")
}

// mcpText is the text of a tool result.
func mcpText(r *mcp.CallToolResult) string {
	var b strings.Builder
	for _, c := range r.Content {
		if tc, ok := c.(*mcp.TextContent); ok {
			b.WriteString(tc.Text)
		}
	}
	return b.String()
}

// confirmations issues and redeems the state a write tool hands the client
// with its question: signed, so that a client cannot make one up; bound to
// the user, the tool and its arguments, so that the answer is to the
// question asked; and good once, within mcpConfirmTTL.
type confirmations struct {
	key []byte
	// kept, when set, keeps the key and the redeemed answers for every
	// node of a cluster (and across restarts); without it they are this
	// process's.
	kept confirmKeeper
	mu   sync.Mutex
	used map[string]time.Time // redeemed states until they expire
}

type confirmState struct {
	User    string `json:"u"`
	Tool    string `json:"t"`
	Args    []byte `json:"a"` // the arguments' SHA-256
	Expires int64  `json:"e"` // Unix seconds
	Nonce   []byte `json:"n"`
}

// newConfirmations signs with the key kept (a random one of this
// process's without a keeper).
func newConfirmations(kept confirmKeeper) (*confirmations, error) {
	c := &confirmations{key: randomBytes(32), kept: kept, used: map[string]time.Time{}}
	if kept != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		key, err := kept.MCPConfirmKey(ctx)
		if err != nil {
			return nil, err
		}
		c.key = key
	}
	return c, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func (c *confirmations) sign(b []byte) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write(b)
	return m.Sum(nil)
}

func (c *confirmations) issue(user, tool string, args []byte) string {
	sum := sha256.Sum256(args)
	b, _ := json.Marshal(confirmState{User: user, Tool: tool, Args: sum[:], Expires: time.Now().Add(mcpConfirmTTL).Unix(), Nonce: randomBytes(16)})
	enc := base64.RawURLEncoding
	return enc.EncodeToString(b) + "." + enc.EncodeToString(c.sign(b))
}

func (c *confirmations) redeem(ctx context.Context, state, user, tool string, args []byte) error {
	enc := base64.RawURLEncoding
	p, sig, _ := strings.Cut(state, ".")
	b, err1 := enc.DecodeString(p)
	mac, err2 := enc.DecodeString(sig)
	if err1 != nil || err2 != nil || !hmac.Equal(mac, c.sign(b)) {
		return errors.New("the request state is not one this server issued")
	}
	var st confirmState
	if err := json.Unmarshal(b, &st); err != nil {
		return errors.New("the request state is not one this server issued")
	}
	sum := sha256.Sum256(args)
	now := time.Now()
	switch {
	case st.User != user || st.Tool != tool:
		return errors.New("the answer was asked of another user or tool")
	case !bytes.Equal(st.Args, sum[:]):
		return errors.New("the arguments differ from those the user was asked about")
	case now.Unix() > st.Expires:
		return fmt.Errorf("no answer within %s", mcpConfirmTTL)
	}
	if c.kept != nil {
		id := sha256.Sum256([]byte(p))
		first, err := c.kept.RedeemOnce(ctx, hex.EncodeToString(id[:]))
		switch {
		case err != nil:
			return fmt.Errorf("the answer could not be checked: %w", err)
		case !first:
			return errors.New("this answer was already used")
		}
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, exp := range c.used {
		if now.After(exp) {
			delete(c.used, k)
		}
	}
	if _, ok := c.used[p]; ok {
		return errors.New("this answer was already used")
	}
	c.used[p] = time.Unix(st.Expires+1, 0)
	return nil
}

// dataTypeNamed is the datatype the API names; an unknown name is a
// string, which takes any text.
func dataTypeNamed(name string) uns.DataType {
	dt, err := uns.ParseDataType(name)
	if err != nil {
		return uns.TypeString
	}
	return dt
}
