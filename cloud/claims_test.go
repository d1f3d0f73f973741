package cloud

import (
	"context"
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/internal/stuck"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// unsMetric is a birth metric that names its UNS path, as a Calx edge's do.
func unsMetric(name string, alias uint64, path string, v float64, ts uint64) *pb.Payload_Metric {
	m := metric(name, alias, pb.DataType_Double, uns.Float(v), ts)
	m.Properties = &pb.Payload_PropertySet{
		Keys: []string{sparkplug.PropUNSPath, sparkplug.PropWritable},
		Values: []*pb.Payload_PropertyValue{
			{Type: proto.Uint32(uint32(pb.DataType_String)), Value: &pb.Payload_PropertyValue_StringValue{StringValue: path}},
			{Type: proto.Uint32(uint32(pb.DataType_Boolean)), Value: &pb.Payload_PropertyValue_BooleanValue{BooleanValue: false}},
		},
	}
	return m
}

// bornNode connects as edge id (password pw) and sends its NBIRTH.
func bornNode(t *testing.T, c *Cloud, id, pw string) *foreign {
	t.Helper()
	cl, err := dial(t, c, id, pw)
	if err != nil {
		t.Fatal(err)
	}
	f := &foreign{t: t, cl: cl, edge: id}
	ts := uint64(time.Now().UnixMilli())
	f.send(sparkplug.NBIRTH, "", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(0), ts),
	}})
	return f
}

// TestBirthCannotTakeAnotherEdgesTags: an edge whose birth names another
// edge's UNS path gets nothing of it, whether the fleet config gives the
// path to the other edge or the other edge defined it first: the tag stays
// bound to its owner, the intruder's values never reach its history, a
// write goes to the owner, the refusal is counted, and a restart replays
// no refused claim.
func TestBirthCannotTakeAnotherEdgesTags(t *testing.T) {
	opts := Options{DataDir: t.TempDir(), MQTT: BrokerOptions{Listen: "127.0.0.1:0", Users: []MQTTUser{
		{Username: "e1", PasswordHash: mustHash(t, "pw1"), Role: RoleEdge, Group: "g", EdgeID: "e1"},
		{Username: "e2", PasswordHash: mustHash(t, "pw2"), Role: RoleEdge, Group: "g", EdgeID: "e2"},
	}}}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The fleet gives ent/s/a/l/assigned to e1, and caps e2 at 3 tags.
	if _, err := c.Fleet.Save(ctx, []byte(`
edges:
  - group: g
    edge_id: e1
    devices:
      - {id: box, path: ent/s/a/l/assigned, connector: signals, settings: {interval: 1s, signals: [{name: n, kind: counter, step: 1}]}}
  - group: g
    edge_id: e2
    max_tags: 3
`), "test", "owners"); err != nil {
		t.Fatal(err)
	}
	victim, intruder := bornNode(t, c, "e1", "pw1"), bornNode(t, c, "e2", "pw2")
	ts := uint64(time.Now().UnixMilli())
	first, assigned := "ent/s/a/l/pump/speed", "ent/s/a/l/assigned/flow"
	victim.send(sparkplug.DBIRTH, "pump", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		unsMetric("speed", 1, first, 50, ts),
	}})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, ok := c.Registry.Get(uns.Path(first)); !ok {
			return fmt.Errorf("%s not defined", first)
		}
		return nil
	})
	// e2 claims e1's tag (defined first by e1) and the fleet-assigned
	// path (not yet defined by anyone), and sends values for both.
	intruder.send(sparkplug.DBIRTH, "x", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		unsMetric("speed", 1, first, 999, ts),
		unsMetric("flow", 2, assigned, 999, ts),
		unsMetric("own", 3, "ent/s/a/l/x/own", 1, ts),
	}})
	for i := range 5 {
		intruder.send(sparkplug.DDATA, "x", &pb.Payload{Timestamp: proto.Uint64(ts + uint64(i+1)), Metrics: []*pb.Payload_Metric{
			metric("", 1, pb.DataType_Double, uns.Float(999), ts+uint64(i+1)),
			metric("", 2, pb.DataType_Double, uns.Float(999), ts+uint64(i+1)),
			metric("", 3, pb.DataType_Double, uns.Float(float64(i+2)), ts+uint64(i+1)),
		}})
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n, _ := c.Historian.Count(ctx, "ent/s/a/l/x/own"); n != 6 {
			return fmt.Errorf("%d points of e2's own tag", n)
		}
		return nil
	})
	if tag, _ := c.Registry.Get(uns.Path(first)); tag.Sparkplug.Edge != "e1" || tag.Value.F != 50 {
		t.Fatalf("e1's tag after e2's claim: %+v", tag)
	}
	if _, ok := c.Registry.Get(uns.Path(assigned)); ok {
		t.Fatalf("the path the fleet gives e1 was defined by e2")
	}
	if n, _ := c.Historian.Count(ctx, uns.Path(first)); n != 1 {
		t.Fatalf("%d points of %s, want e1's birth value alone", n, first)
	}
	if st := c.Host.Stats(); st.ForeignClaims != 2 {
		t.Fatalf("foreign claims counted: %+v", st)
	}

	// A write to the tag goes to its owner, e1, naming the metric by the
	// alias its birth gave it, and only so (Sparkplug 3.0
	// payloads-alias-data-cmd-requirement).
	cmds := make(chan paho.Message, 4)
	for _, f := range []*foreign{victim, intruder} {
		f.cl.Subscribe("spBv1.0/g/DCMD/"+f.edge+"/#", 1, func(_ paho.Client, m paho.Message) { cmds <- m }).WaitTimeout(5 * time.Second)
	}
	if err := c.Host.Write(uns.Path(first), uns.Float(42)); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-cmds:
		if m.Topic() != "spBv1.0/g/DCMD/e1/pump" {
			t.Fatalf("write went to %s", m.Topic())
		}
		p, err := sparkplug.Decode(m.Payload())
		if err != nil || len(p.Metrics) != 1 || p.Metrics[0].Name != nil || p.Metrics[0].GetAlias() != 1 || p.Metrics[0].GetDoubleValue() != 42 {
			t.Fatalf("DCMD %+v %v", p, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no DCMD")
	}

	// The fleet caps e2 at 3 tags, one of which its device x holds: of a
	// birth of 5, 3 are refused.
	var five []*pb.Payload_Metric
	for i := range 5 {
		five = append(five, unsMetric(fmt.Sprint("m", i), uint64(i+1), fmt.Sprintf("ent/s/a/l/y/m%d", i), 1, ts))
	}
	intruder.send(sparkplug.DBIRTH, "y", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: five})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := c.Host.Stats(); st.OverTagCap != 3 {
			return fmt.Errorf("over cap: %d, want 3", st.OverTagCap)
		}
		return nil
	})
	if got := len(c.Registry.List("ent/s/a/l/y")); got != 2 {
		t.Fatalf("%d tags of device y, want 2 (cap 3, one used by x)", got)
	}

	// e1 births its device again, so that its birth is the newer one kept:
	// after a restart the births are replayed, e2's first, and the tag is
	// still e1's.
	victim.send(sparkplug.DBIRTH, "pump", &pb.Payload{Timestamp: proto.Uint64(ts + 10), Metrics: []*pb.Payload_Metric{
		unsMetric("speed", 1, first, 51, ts+10),
	}})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n, _ := c.Historian.Count(ctx, uns.Path(first)); n != 2 {
			return fmt.Errorf("%d points of %s", n, first)
		}
		return nil
	})
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c2, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stuck.Within(t, time.Minute, "the cloud's shutdown", func() { c2.Shutdown(context.Background()) })
	})
	if tag, ok := c2.Registry.Get(uns.Path(first)); !ok || tag.Sparkplug.Edge != "e1" {
		t.Fatalf("after a restart: %+v %v", tag, ok)
	}
	if _, ok := c2.Registry.Get(uns.Path(assigned)); ok {
		t.Fatalf("after a restart the path the fleet gives e1 is defined")
	}
}

// Sparkplug births, data and deaths are never kept as retained messages,
// whatever flag the edge sets (Sparkplug forbids it): a later subscriber
// gets none, and each is counted.
func TestSparkplugNeverRetained(t *testing.T) {
	c := startCloud(t)
	f := bornNode(t, c, "e1", "pw1")
	ts := uint64(time.Now().UnixMilli())
	p := &pb.Payload{Timestamp: proto.Uint64(ts), Seq: proto.Uint64(1), Metrics: []*pb.Payload_Metric{metric("speed", 1, pb.DataType_Double, uns.Float(1), ts)}}
	b, _ := proto.Marshal(p)
	for _, topic := range []string{"spBv1.0/g/DBIRTH/e1/pump", "spBv1.0/g/DDATA/e1/pump"} {
		tok := f.cl.Publish(topic, 1, true, b)
		tok.WaitTimeout(5 * time.Second)
		if tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	reader, err := dial(t, c, "reader", "pwr")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	reader.Subscribe("spBv1.0/g/#", 1, func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			got <- m.Topic()
		}
	}).WaitTimeout(5 * time.Second)
	select {
	case topic := <-got:
		t.Fatalf("retained Sparkplug message on %s", topic)
	case <-time.After(300 * time.Millisecond):
	}
	if st := c.Broker.Stats(); st.RetainCleared != 2 {
		t.Fatalf("retain cleared: %+v", st)
	}
	// Their values are taken all the same.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n, _ := c.Historian.Count(context.Background(), "g/e1/pump/speed"); n != 1 {
			return fmt.Errorf("%d points", n)
		}
		return nil
	})
}

// A birth that has no value yet for a tag (is_null), then the tag's first
// value with an older source time (an OPC UA variable that never changes):
// that value is the tag's current value, good, and the history has no
// null at the birth's time. (The null birth once made every older value
// look stale: the tag showed bad all session.)
func TestNullBirthThenOlderValue(t *testing.T) {
	c := startCloud(t)
	f := bornNode(t, c, "e1", "pw1")
	now := uint64(time.Now().UnixMilli())
	old := now - uint64(time.Hour.Milliseconds())
	m := unsMetric("level", 1, "ent/s/a/l/tank/level", 0, now)
	m.Value, m.IsNull = nil, proto.Bool(true)
	f.send(sparkplug.DBIRTH, "tank", &pb.Payload{Timestamp: proto.Uint64(now), Metrics: []*pb.Payload_Metric{m}})
	f.send(sparkplug.DDATA, "tank", &pb.Payload{Timestamp: proto.Uint64(now + 5), Metrics: []*pb.Payload_Metric{
		metric("", 1, pb.DataType_Double, uns.Float(42), old)}})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		tag, _ := c.Registry.Get("ent/s/a/l/tank/level")
		if !tag.HasVal || tag.Value.F != 42 || tag.Quality != uns.Good {
			return fmt.Errorf("current %+v %v", tag.Value, tag.Quality)
		}
		return nil
	})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		pts, err := c.Historian.History(context.Background(), "ent/s/a/l/tank/level", time.UnixMilli(int64(old)-1), time.Now().Add(time.Minute), 10)
		if err != nil || len(pts) != 1 {
			return fmt.Errorf("history %+v %v, want the one value", pts, err)
		}
		return nil
	})
}
