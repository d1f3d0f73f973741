package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func cmdMCP(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("mcp", `Bridge an AI assistant that starts MCP servers as local programs (stdio) to a
Calx cloud's MCP endpoint: JSON-RPC messages read from standard input go to
--url with the API token of --token-file, and the answers are written to
standard output, one a line. The assistant sees what the token may see.`, stdout, stderr)
	url := fs.String("url", "", "the cloud's MCP endpoint, such as https://calx.example.net:8443/mcp")
	tokenFile := fs.String("token-file", "", "a file holding the API token")
	caFile := fs.String("ca-file", "", "CA certificate (PEM) the cloud's TLS certificate is checked against; default the system's")
	timeout := fs.Duration("timeout", time.Minute, "how long one call may take")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return shownError{fmt.Errorf("%w: %v", errUsage, err)}
	}
	if *url == "" || *tokenFile == "" {
		return fmt.Errorf("%w: --url and --token-file are required", errUsage)
	}
	b, err := os.ReadFile(*tokenFile)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if token == "" {
		return fmt.Errorf("token: %s is empty", *tokenFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("ca-file: no PEM certificate in %s", *caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	br := &mcpBridge{url: *url, token: token, client: &http.Client{Transport: tr, Timeout: *timeout}, log: stderr}
	return br.run(ctx, stdin, stdout)
}

// mcpBridge forwards JSON-RPC messages from stdio to a Streamable HTTP
// endpoint that answers with JSON (Calx's is stateless), one POST a
// message.
type mcpBridge struct {
	url, token string
	client     *http.Client
	log        io.Writer
	version    string // the protocol version initialize agreed on
}

// maxMCPLine bounds one message read from the assistant.
const maxMCPLine = 16 << 20

func (b *mcpBridge) run(ctx context.Context, in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), maxMCPLine)
	w := bufio.NewWriter(out)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		answer := b.forward(ctx, line)
		if answer == nil {
			continue
		}
		w.Write(answer)
		w.WriteByte('\n')
		if err := w.Flush(); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	return nil
}

// forward posts one message and returns the answer to write (nil for
// none: a notification, or a response the assistant sent).
func (b *mcpBridge) forward(ctx context.Context, msg []byte) []byte {
	var head struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
		Params struct {
			Name string `json:"name"` // of a tool or prompt
			URI  string `json:"uri"`  // of a resource
			Meta struct {
				// From MCP 2026-07-28 on, each request names its
				// version, which the endpoint asks to see in the header.
				Version string `json:"io.modelcontextprotocol/protocolVersion"`
			} `json:"_meta"`
		} `json:"params"`
	}
	if err := json.Unmarshal(msg, &head); err != nil {
		return rpcError(nil, -32700, "calx mcp: not JSON: "+err.Error())
	}
	call := len(head.ID) > 0 && head.Method != ""
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(msg))
	if err != nil {
		return b.fail(call, head.ID, err.Error())
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+b.token)
	if v := cmp.Or(head.Params.Meta.Version, b.version); v != "" {
		req.Header.Set("Mcp-Protocol-Version", v)
		// From 2026-07-28 on, a request's method and what it names are in
		// its headers too, as the HTTP transport asks.
		if v >= "2026-07-28" && head.Method != "" {
			req.Header.Set("Mcp-Method", head.Method)
			switch head.Method {
			case "tools/call", "prompts/get":
				req.Header.Set("Mcp-Name", head.Params.Name)
			case "resources/read":
				req.Header.Set("Mcp-Name", head.Params.URI)
			}
		}
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return b.fail(call, head.ID, err.Error())
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMCPLine))
	if err != nil {
		return b.fail(call, head.ID, err.Error())
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		text := strings.TrimSpace(string(body))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			text = e.Error
		}
		return b.fail(call, head.ID, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, text))
	}
	if !call || len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if head.Method == "initialize" {
		var r struct {
			Result struct {
				ProtocolVersion string `json:"protocolVersion"`
			} `json:"result"`
		}
		if json.Unmarshal(body, &r) == nil {
			b.version = r.Result.ProtocolVersion
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		return b.fail(call, head.ID, "the endpoint did not answer JSON: "+err.Error())
	}
	return compact.Bytes()
}

// fail logs a failed call and answers it with a JSON-RPC error (a
// notification gets none).
func (b *mcpBridge) fail(call bool, id json.RawMessage, msg string) []byte {
	fmt.Fprintf(b.log, "calx mcp: %s\n", msg)
	if !call {
		return nil
	}
	return rpcError(id, -32000, "calx mcp: "+msg)
}

func rpcError(id json.RawMessage, code int, msg string) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	out, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": id, "error": map[string]any{"code": code, "message": msg}})
	return out
}
