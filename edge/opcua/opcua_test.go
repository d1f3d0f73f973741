package opcua

import (
	"context"
	"fmt"
	"io"
	"log"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/uns"
)

// gopcua's server also prints through the standard logger.
func TestMain(m *testing.M) {
	log.SetOutput(io.Discard)
	os.Exit(m.Run())
}

type quiet struct{}

func (quiet) Debug(string, ...any) {}
func (quiet) Info(string, ...any)  {}
func (quiet) Warn(string, ...any)  {}
func (quiet) Error(string, ...any) {}

// startServer runs gopcua's OPC UA server (security None, anonymous) with
// a map namespace of plant values.
func startServer(t *testing.T) (*server.MapNamespace, string) {
	t.Helper()
	return startServerWith(t, func(ns *server.MapNamespace) {
		ns.Data["Kiln1.Temp"] = 1101.5
		ns.Data["Kiln1.Cycles"] = int32(42)
		ns.Data["Kiln1.Running"] = true
		ns.Data["Kiln1.State"] = "running"
		ns.Data["Kiln1.Setpoint"] = 18.0
	})
}

// startServerWith runs the server with the variables fill puts in its map
// namespace, until the test ends.
func startServerWith(tb testing.TB, fill func(*server.MapNamespace)) (*server.MapNamespace, string) {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	s := server.New(server.EnableSecurity("None", ua.MessageSecurityModeNone), server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.EndPoint("127.0.0.1", port), server.SetLogger(quiet{}))
	ns := server.NewMapNamespace(s, "Plant")
	fill(ns)
	if err := s.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return ns, "opc.tcp://127.0.0.1:" + strconv.Itoa(port)
}

func tags(ns uint16) []*Tag {
	id := func(k string) string { return fmt.Sprintf("ns=%d;s=%s", ns, k) }
	return []*Tag{
		{Name: "temp", NodeID: id("Kiln1.Temp"), TagOptions: connector.TagOptions{Unit: "°C"}},
		{Name: "cycles", NodeID: id("Kiln1.Cycles"), Type: "int64"},
		{Name: "running", NodeID: id("Kiln1.Running"), Type: "bool"},
		{Name: "state", NodeID: id("Kiln1.State"), Type: "string"},
		{Name: "setpoint", NodeID: id("Kiln1.Setpoint"), TagOptions: connector.TagOptions{Writable: true}},
		{Name: "missing", NodeID: id("Kiln1.NoSuchThing")},
	}
}

func TestPollReadsAndWrites(t *testing.T) {
	ns, url := startServer(t)
	srv, err := New("kiln1", Settings{Endpoint: url, Mode: "poll", Interval: 50 * time.Millisecond, Tags: tags(ns.ID())}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := edgetest.Run(t, srv)
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := get(s, "state"); !r.Value.Equal(uns.String("running")) {
			return fmt.Errorf("state = %+v", r.Value)
		}
		return nil
	})
	for tag, want := range map[string]uns.Value{"temp": uns.Float(1101.5), "cycles": uns.Int(42), "running": uns.Bool(true)} {
		if r := get(s, tag); !r.Value.Equal(want) || r.Quality != uns.Good {
			t.Errorf("%s = %+v %v, want %+v", tag, r.Value, r.Quality, want)
		}
	}
	if r := get(s, "missing"); r.Quality != uns.Bad {
		t.Errorf("unknown node: quality %v, want bad", r.Quality)
	}
	if err := srv.Write(context.Background(), "setpoint", uns.Float(21.5)); err != nil {
		t.Fatal(err)
	}
	edgetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if r := get(s, "setpoint"); !r.Value.Equal(uns.Float(21.5)) {
			return fmt.Errorf("setpoint = %+v", r.Value)
		}
		return nil
	})
	if err := srv.Write(context.Background(), "temp", uns.Float(1)); err == nil {
		t.Error("write to a read-only tag accepted")
	}
}

func TestSubscription(t *testing.T) {
	ns, url := startServer(t)
	tt := tags(ns.ID())[:2]
	tt[0].Deadband = 0.5 // sent to the server as a DataChangeFilter
	srv, err := New("kiln1", Settings{Endpoint: url, Interval: 50 * time.Millisecond, Tags: tt}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := edgetest.Run(t, srv)
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := get(s, "temp"); !r.Value.Equal(uns.Float(1101.5)) {
			return fmt.Errorf("temp = %+v", r.Value)
		}
		return nil
	})
	ns.SetValue("Kiln1.Temp", 1099.0)
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := get(s, "temp"); !r.Value.Equal(uns.Float(1099)) {
			return fmt.Errorf("temp = %+v after a change", r.Value)
		}
		return nil
	})
}

// The server goes away: the device is lost.
func TestServerLoss(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	srv, err := New("kiln1", Settings{Endpoint: "opc.tcp://" + addr, Mode: "poll", Timeout: time.Second,
		Tags: []*Tag{{Name: "t", NodeID: "ns=1;s=x"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := edgetest.Run(t, srv)
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s.Losses() == 0 {
			return fmt.Errorf("not reported lost")
		}
		return nil
	})
}

func TestSettingsErrors(t *testing.T) {
	for name, s := range map[string]Settings{
		"endpoint":   {Endpoint: "http://x", Tags: []*Tag{{Name: "a", NodeID: "ns=1;s=a"}}},
		"node id":    {Endpoint: "opc.tcp://x:4840", Tags: []*Tag{{Name: "a", NodeID: "ns=x;i=1"}}},
		"policy":     {Endpoint: "opc.tcp://x:4840", SecurityPolicy: "Basic128", Tags: []*Tag{{Name: "a", NodeID: "ns=1;s=a"}}},
		"cert only":  {Endpoint: "opc.tcp://x:4840", SecurityPolicy: "Basic256Sha256", CertFile: "c.pem", Tags: []*Tag{{Name: "a", NodeID: "ns=1;s=a"}}},
		"no cert":    {Endpoint: "opc.tcp://x:4840", SecurityPolicy: "Basic256Sha256", CertFile: "none.pem", KeyFile: "none.key", Tags: []*Tag{{Name: "a", NodeID: "ns=1;s=a"}}},
		"mode":       {Endpoint: "opc.tcp://x:4840", Mode: "push", Tags: []*Tag{{Name: "a", NodeID: "ns=1;s=a"}}},
		"mixed":      {Endpoint: "opc.tcp://x:4840", SecurityMode: "Sign", Tags: []*Tag{{Name: "a", NodeID: "ns=1;s=a"}}},
		"no tags":    {Endpoint: "opc.tcp://x:4840"},
		"duplicates": {Endpoint: "opc.tcp://x:4840", Tags: []*Tag{{Name: "a", NodeID: "ns=1;s=a"}, {Name: "a", NodeID: "ns=1;s=b"}}},
	} {
		if _, err := New("d", s, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func get(s *edgetest.Sink, tag string) connector.Reading {
	r, _ := s.Get(tag)
	return r
}

func TestSampleConfig(t *testing.T) {
	edgetest.SampleConfig(t, "sample.yaml", func(s Settings) error {
		_, err := New("sample", s, nil)
		return err
	})
}

func TestBrowse(t *testing.T) {
	ns, url := startServer(t)
	vars, err := Browse(context.Background(), Settings{Endpoint: url}, 6)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("ns=%d;s=Kiln1.Temp", ns.ID())
	var found *Variable
	for i := range vars {
		if vars[i].NodeID == want {
			found = &vars[i]
		}
	}
	if found == nil {
		t.Fatalf("%s not among %d variables: %+v", want, len(vars), vars)
	}
	var b strings.Builder
	WriteYAML(&b, url, vars)
	if !strings.Contains(b.String(), want) {
		t.Fatalf("YAML lacks %s:\n%s", want, b.String())
	}
	// What browse prints is a valid tag list.
	var s Settings
	if err := config.Decode("browse.yaml", []byte(b.String()), &s); err != nil {
		t.Fatalf("browse output does not decode: %v\n%s", err, b.String())
	}
	t.Logf("found %s: %+v", want, *found)
}

// A write goes to the server as the variable's own data type (a Float as a
// Float, not a Double), learned from the server or named by node_type, and
// a value the type cannot hold is refused, never wrapped or cut.
func TestWritesAsTheNodeType(t *testing.T) {
	ns, url := startServer(t)
	ns.Data["Kiln1.Flow"] = float32(5.5)
	ns.Data["Kiln1.Count"] = uint32(7)
	id := func(k string) string { return fmt.Sprintf("ns=%d;s=%s", ns.ID(), k) }
	srv, err := New("kiln1", Settings{Endpoint: url, Mode: "poll", Interval: 50 * time.Millisecond, Tags: []*Tag{
		{Name: "flow", NodeID: id("Kiln1.Flow"), TagOptions: connector.TagOptions{Writable: true}},
		{Name: "count", NodeID: id("Kiln1.Count"), Type: "int64", NodeType: "UInt32", TagOptions: connector.TagOptions{Writable: true}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := edgetest.Run(t, srv)
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if r := get(s, "count"); !r.Value.Equal(uns.Int(7)) {
			return fmt.Errorf("count = %+v", r.Value)
		}
		return nil
	})
	ctx := context.Background()
	for _, tc := range []struct {
		tag string
		v   uns.Value
	}{{"count", uns.Float(5e9)}, {"count", uns.Int(-1)}, {"flow", uns.Float(1e39)}, {"count", uns.Float(math.NaN())}} {
		if err := srv.Write(ctx, tc.tag, tc.v); err == nil || !strings.Contains(err.Error(), "range") && !strings.Contains(err.Error(), "finite") {
			t.Errorf("%s = %v: %v, want refused", tc.tag, tc.v.Any(), err)
		}
	}
	if err := srv.Write(ctx, "flow", uns.Float(21.5)); err != nil {
		t.Fatal(err)
	}
	if err := srv.Write(ctx, "count", uns.Int(42)); err != nil {
		t.Fatal(err)
	}
	edgetest.CheckFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		flow, _ := ns.Data["Kiln1.Flow"].(float32)
		count, _ := ns.Data["Kiln1.Count"].(uint32)
		if flow != 21.5 || count != 42 {
			return fmt.Errorf("server holds %T %v and %T %v", ns.Data["Kiln1.Flow"], ns.Data["Kiln1.Flow"], ns.Data["Kiln1.Count"], ns.Data["Kiln1.Count"])
		}
		return nil
	})
	for _, def := range srv.Tags() {
		if def.Name == "count" && (def.WriteMin == nil || *def.WriteMin != 0 || def.WriteMax == nil || *def.WriteMax != math.MaxUint32) {
			t.Errorf("count's writable range %v..%v", def.WriteMin, def.WriteMax)
		}
	}
}
