package interop_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web/webtest"
)

// needTahu returns the node binary when Eclipse Tahu's libraries are
// installed under interop/tahu (make test does it).
func needTahu(t *testing.T) string {
	t.Helper()
	return needNode(t, "Tahu's Sparkplug libraries", filepath.Join("tahu", "node_modules", "sparkplug-client"))
}

// needNode returns the node binary when the npm package at module (what
// it is) is installed: without it the test skips on a developer's machine
// and fails under CI.
func needNode(t *testing.T, what, module string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(module)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s missing (%v): make test installs them with npm", what, err)
		}
		t.Skipf("interop test skipped: node or %s missing (%v); run make test", what, err)
	}
	return node
}

// peer is a running node script whose stdout lines are collected.
type peer struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func startPeer(t *testing.T, node, script string, env ...string) *peer {
	t.Helper()
	cmd := exec.Command(node, script)
	cmd.Dir = "tahu"
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &peer{cmd: cmd, stdin: in, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return p
}

func (p *peer) waitLine(t *testing.T, prefix string, d time.Duration) string {
	t.Helper()
	var line string
	edgetest.CheckFor(t, d, 20*time.Millisecond, func() error {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, l := range p.lines {
			if strings.HasPrefix(l, prefix) {
				line = l
				return nil
			}
		}
		return fmt.Errorf("no line %q from %s yet (have %d lines)", prefix, p.cmd.Args[1], len(p.lines))
	})
	return line
}

func (p *peer) count(prefix string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, l := range p.lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// interopCloud runs a cloud with an edge identity for Tahu and a reader.
func interopCloud(t *testing.T, extra ...cloud.MQTTUser) *webtest.App {
	t.Helper()
	h := func(pw string) string {
		s, err := cloud.HashPassword(pw)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	users := append([]cloud.MQTTUser{
		{Username: "observer", PasswordHash: h("observer-pw"), Role: cloud.RoleReader},
	}, extra...)
	return webtest.Start(t, cloud.Options{MQTT: cloud.BrokerOptions{Users: users}})
}

// TestTahuEdgeNodeIntoCalx: an edge node built on Eclipse Tahu's
// sparkplug-client publishes to a Calx cloud. Its metrics show up in the
// namespace with the right types and values, its counter arrives complete
// in the history, and a rebirth request from Calx reaches it.
func TestTahuEdgeNodeIntoCalx(t *testing.T) {
	node := needTahu(t)
	app := interopCloud(t)
	// The foreign node's identity is provisioned through the API.
	c := app.Admin()
	code, acct := c.Do("POST", "/api/v1/edges", map[string]string{"group": "tahu", "edge_node": "tahu-edge"})
	if code != 201 || acct["password"] == "" {
		t.Fatalf("provision: %d %v", code, acct)
	}
	if code, out := c.Do("POST", "/api/v1/edges", map[string]string{"group": "tahu", "edge_node": "tahu-edge"}); code != 409 {
		t.Fatalf("provisioning twice: %d %v", code, out)
	}
	if code, out := c.Do("POST", "/api/v1/edges", map[string]string{"group": "tahu", "edge_node": "a+b"}); code != 400 {
		t.Fatalf("provisioning a bad id: %d %v", code, out)
	}
	const n = 20
	p := startPeer(t, node, "edge.js", "BROKER=mqtt://"+app.Cloud.Broker.Addr(), "USERNAME="+acct["username"].(string), "PASSWORD="+acct["password"].(string),
		"GROUP=tahu", "EDGE=tahu-edge", fmt.Sprintf("COUNT=%d", n))
	p.waitLine(t, "DONE", 20*time.Second)

	counter := uns.Path("tahu/tahu-edge/press/counter")
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		c, err := app.Cloud.Historian.Count(context.Background(), counter)
		if err == nil && c != n+1 {
			err = fmt.Errorf("%d counter values stored, want %d", c, n+1)
		}
		return err
	})
	pts, err := app.Cloud.Historian.History(context.Background(), counter, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, pt := range pts {
		if pt.Value.I != int64(i) {
			t.Fatalf("counter value %d = %d", i, pt.Value.I)
		}
	}
	want := map[string]struct {
		dt uns.DataType
		v  uns.Value
	}{
		"i8": {uns.TypeInt64, uns.Int(-8)}, "i16": {uns.TypeInt64, uns.Int(-1600)}, "i64": {uns.TypeInt64, uns.Int(-6400000000)},
		"u32": {uns.TypeInt64, uns.Int(4000000000)}, "u64": {uns.TypeInt64, uns.Int(64000000000)},
		"f32": {uns.TypeFloat64, uns.Float(1.5)}, "f64": {uns.TypeFloat64, uns.Float(1234.5678)},
		"flag": {uns.TypeBool, uns.Bool(true)}, "label": {uns.TypeString, uns.String("die 7")},
		"notes": {uns.TypeString, uns.String("long text")}, "id": {uns.TypeString, uns.String("123e4567-e89b-12d3-a456-426614174000")},
	}
	for name, w := range want {
		tag, ok := app.Cloud.Registry.Get(uns.Path("tahu/tahu-edge/press/" + name))
		if !ok {
			t.Errorf("%s not in the namespace", name)
			continue
		}
		if tag.DataType != w.dt || !tag.Value.Equal(w.v) || tag.Sparkplug.Device != "press" || tag.Sparkplug.Metric != name {
			t.Errorf("%s: %v %+v %+v, want %v %+v", name, tag.DataType, tag.Value, tag.Sparkplug, w.dt, w.v)
		}
	}
	if tag, _ := app.Cloud.Registry.Get(counter); tag.Unit != "parts" {
		t.Errorf("counter unit %q", tag.Unit)
	}

	if err := app.Cloud.Host.RequestRebirth("tahu", "tahu-edge"); err != nil {
		t.Fatal(err)
	}
	p.waitLine(t, "REBIRTH", 10*time.Second)
	t.Logf("archiver: %+v host: %+v", app.Cloud.ArchiverStats(context.Background()), app.Cloud.Host.Stats())
	if st := app.Cloud.Host.Stats(); st.Malformed != 0 || st.SeqGaps != 0 {
		t.Errorf("host stats: %+v", st)
	}
}

// observerSummary is what observer.js prints.
type observerSummary struct {
	Errors []string       `json:"errors"`
	Counts map[string]int `json:"counts"`
	Nodes  map[string]struct {
		Births, Deaths, Data, Historical, Aliases int
		BdSeq                                     *int     `json:"bdSeq"`
		Devices                                   []string `json:"devices"`
	} `json:"nodes"`
}

// TestCalxEdgeObservedByTahu: every message of a Calx edge node, decoded
// with Eclipse Tahu's sparkplug-payload, follows the rules: births with
// seq 0 and bdSeq, seq continuity, aliases, no names or types in data, QoS
// and retain flags, and a Will whose bdSeq matches the birth.
func TestCalxEdgeObservedByTahu(t *testing.T) {
	node := needTahu(t)
	edgePw := "calx-edge-pw"
	hash, _ := cloud.HashPassword(edgePw)
	app := interopCloud(t, cloud.MQTTUser{Username: "calx-edge", PasswordHash: hash, Role: cloud.RoleEdge, Group: "limeworks", EdgeID: "calx-edge"})
	obs := startPeer(t, node, "observer.js", "BROKER=mqtt://"+app.Cloud.Broker.Addr(), "USERNAME=observer", "PASSWORD=observer-pw")
	obs.waitLine(t, "READY", 10*time.Second)

	kiln, _ := sim.New("k", sim.Settings{Interval: 20 * time.Millisecond, StartHot: true})
	e := edgetest.Start(t, edge.Options{Broker: "tcp://" + app.Cloud.Broker.Addr(), Username: "calx-edge", Password: edgePw,
		Group: "limeworks", EdgeID: "calx-edge", PrimaryHost: "calx", DataDir: t.TempDir(),
		Devices: []edge.Device{{ID: "kiln1", Path: "limeworks/test/kilns/line1/kiln1", Connector: kiln}}})
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if e.Stats().Sent < 100 {
			return fmt.Errorf("%d values sent", e.Stats().Sent)
		}
		return nil
	})
	// The link fails: the broker sends the Will; the edge reconnects with
	// the next bdSeq and births again.
	if err := app.Cloud.Broker.Disconnect("limeworks.calx-edge"); err != nil {
		t.Fatal(err)
	}
	edgetest.CheckFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		for _, n := range app.Cloud.Host.Nodes() {
			if n.Edge == "calx-edge" && n.Online && n.BdSeq == 1 {
				return nil
			}
		}
		return fmt.Errorf("edge not born again: %+v", app.Cloud.Host.Nodes())
	})
	sent := e.Stats().Sent
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if e.Stats().Sent < sent+50 {
			return fmt.Errorf("no data after rebirth")
		}
		return nil
	})
	// A clean stop sends NDEATH itself.
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := obs.count("NDEATH limeworks/calx-edge"); n < 2 {
			return fmt.Errorf("observer saw %d NDEATH", n)
		}
		return nil
	})
	obs.stdin.Close()
	line := obs.waitLine(t, "{", 10*time.Second)
	var sum observerSummary
	if err := json.Unmarshal([]byte(line), &sum); err != nil {
		t.Fatalf("observer summary %q: %v", line, err)
	}
	for _, e := range sum.Errors {
		t.Errorf("Tahu observer: %s", e)
	}
	n, ok := sum.Nodes["limeworks/calx-edge"]
	if !ok {
		t.Fatalf("observer saw no Calx edge: %+v", sum)
	}
	if n.Births != 2 || n.Deaths != 2 || n.BdSeq == nil || *n.BdSeq != 1 || n.Data < 100 || len(n.Devices) != 1 {
		t.Fatalf("observer summary of the Calx edge: %+v counts %v", n, sum.Counts)
	}
	t.Logf("observer: %+v counts %v", n, sum.Counts)
}
