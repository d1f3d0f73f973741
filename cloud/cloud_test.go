package cloud

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/internal/stuck"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// checkFor polls until a condition holds.
var checkFor = edgetest.CheckFor

var hashes sync.Map

func mustHash(t *testing.T, pw string) string {
	t.Helper()
	if h, ok := hashes.Load(pw); ok {
		return h.(string)
	}
	h, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	hashes.Store(pw, h)
	return h
}

// startCloud runs a cloud on a free port in a temp dir with two edges
// (e1, e2 in group g) and a reader.
func startCloud(t *testing.T) *Cloud {
	t.Helper()
	return startCloudWith(t, Options{MQTT: BrokerOptions{Users: []MQTTUser{
		{Username: "e1", PasswordHash: mustHash(t, "pw1"), Role: RoleEdge, Group: "g", EdgeID: "e1"},
		{Username: "e2", PasswordHash: mustHash(t, "pw2"), Role: RoleEdge, Group: "g", EdgeID: "e2"},
		{Username: "reader", PasswordHash: mustHash(t, "pwr"), Role: RoleReader},
	}}})
}

// startCloudWith runs a cloud with opts in a temp dir, MQTT on a free port.
func startCloudWith(t *testing.T, opts Options) *Cloud {
	t.Helper()
	opts.DataDir, opts.MQTT.Listen = t.TempDir(), "127.0.0.1:0"
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stuck.Within(t, time.Minute, "the cloud's shutdown", func() { c.Shutdown(context.Background()) })
	})
	return c
}

func dial(t *testing.T, c *Cloud, user, pw string) (paho.Client, error) {
	t.Helper()
	o := paho.NewClientOptions().AddBroker("tcp://" + c.Broker.Addr()).SetClientID(user + "-" + fmt.Sprint(time.Now().UnixNano())).
		SetUsername(user).SetPassword(pw).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	cl := paho.NewClient(o)
	tok := cl.Connect()
	tok.WaitTimeout(5 * time.Second)
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { cl.Disconnect(10) })
	return cl, nil
}

func TestNoAnonymousOrWrongPassword(t *testing.T) {
	c := startCloud(t)
	for _, tc := range []struct{ user, pw string }{{"", ""}, {"e1", "wrong"}, {"nobody", "pw1"}} {
		if _, err := dial(t, c, tc.user, tc.pw); err == nil {
			t.Errorf("login %q/%q accepted", tc.user, tc.pw)
		}
	}
	if _, err := dial(t, c, "e1", "pw1"); err != nil {
		t.Fatalf("good login refused: %v", err)
	}
	if c.Broker.Stats().AuthDenied < 3 {
		t.Errorf("auth denials not counted: %+v", c.Broker.Stats())
	}
}

func TestACL(t *testing.T) {
	e1 := MQTTUser{Username: "e1", Role: RoleEdge, Group: "g", EdgeID: "e1"}
	rd := MQTTUser{Username: "r", Role: RoleReader}
	// A custom account whose filters would let it act as the host.
	custom := MQTTUser{Username: "c", Role: RoleCustom, Publish: []string{"#"}, Subscribe: []string{"#"}}
	for _, tc := range []struct {
		u     MQTTUser
		topic string
		write bool
		ok    bool
	}{
		{custom, "spBv1.0/STATE/calx", true, false},
		{custom, "spBv1.0/g/NCMD/e1", true, false},
		{custom, "spBv1.0/g/DCMD/e1/kiln1", true, false},
		{custom, "calx/receipt/g/e1", true, false},
		{custom, "calx/config-status/g/e1", true, false},
		{custom, "uns/ent/site/area/line/m/t", true, false},
		{custom, "site/mes/order", true, true},
		{custom, "spBv1.0/g/DDATA/e1/kiln1", true, false},
		{custom, "spBv1.0/g/NCMD/e1", false, true},
		{e1, "calx/config-status/g/e1", true, true},
		{e1, "calx/update-get/g/e1", true, true},
		{e1, "calx/update-get/g/e2", true, false},
		{e1, "calx/update/g/e1", true, false},
		{e1, "calx/update-chunk/g/e1", true, false},
		{e1, "calx/update/g/e1", false, true},
		{e1, "calx/update-chunk/g/e1", false, true},
		{e1, "calx/update/g/e2", false, false},
		{e1, "calx/update-chunk/g/+", false, false},
		{e1, "calx/update/#", false, false},
		{custom, "calx/update/g/e1", true, false},
		{custom, "calx/update-get/g/e1", true, false},
		{rd, "calx/update-get/g/e1", true, false},
		{rd, "calx/update/g/e1", true, false},
		{e1, "calx/receipt/g/e1", true, false},
		{e1, "spBv1.0/g/NBIRTH/e1", true, true},
		{e1, "spBv1.0/g/DDATA/e1/kiln1", true, true},
		{e1, "spBv1.0/g/NDEATH/e1", true, true},
		{e1, "spBv1.0/g/NBIRTH/e2", true, false},
		{e1, "spBv1.0/other/NBIRTH/e1", true, false},
		{e1, "spBv1.0/g/NCMD/e1", true, false},
		{e1, "spBv1.0/STATE/calx", true, false},
		{e1, "uns/a/b", true, false},
		{e1, "spBv1.0/g/NCMD/e1", false, true},
		{e1, "spBv1.0/g/DCMD/e1/+", false, true},
		{e1, "spBv1.0/g/DCMD/e1/kiln1", false, true},
		{e1, "spBv1.0/g/DCMD/e1/#", false, true},
		{e1, "spBv1.0/g/NCMD/e1/#", false, true},
		{e1, "spBv1.0/g/NCMD/+", false, false},
		{e1, "spBv1.0/g/DCMD/e1/x/y", false, false},
		{e1, "spBv1.0/g/DCMD/+/x", false, false},
		{e1, "spBv1.0/g/NCMD/e2", false, false},
		{e1, "spBv1.0/STATE/calx", false, true},
		{e1, "spBv1.0/#", false, false},
		{e1, "#", false, false},
		{rd, "#", false, true},
		{rd, "spBv1.0/g/NBIRTH/e1", true, false},
	} {
		if got := allowed(tc.u, tc.topic, tc.write); got != tc.ok {
			t.Errorf("%s %s write=%v: %v, want %v", tc.u.Username, tc.topic, tc.write, got, tc.ok)
		}
	}
}

// foreign is a hand-driven Sparkplug edge node, as a third party would send.
type foreign struct {
	t    *testing.T
	cl   paho.Client
	seq  uint64
	edge string // e1 when empty
}

func (f *foreign) send(typ sparkplug.MsgType, device string, p *pb.Payload) {
	f.t.Helper()
	if typ != sparkplug.NDEATH {
		if typ == sparkplug.NBIRTH {
			f.seq = 0
		}
		p.Seq = proto.Uint64(f.seq)
		f.seq = (f.seq + 1) % 256
	}
	b, err := proto.Marshal(p)
	if err != nil {
		f.t.Fatal(err)
	}
	f.raw(sparkplug.Topic{Group: "g", Type: typ, Edge: cmp.Or(f.edge, "e1"), Device: device}.String(), b)
}

func (f *foreign) raw(topic string, b []byte) {
	f.t.Helper()
	tok := f.cl.Publish(topic, 0, false, b)
	tok.WaitTimeout(5 * time.Second)
	if tok.Error() != nil {
		f.t.Fatal(tok.Error())
	}
}

func metric(name string, alias uint64, dt pb.DataType, v uns.Value, ts uint64) *pb.Payload_Metric {
	m := &pb.Payload_Metric{Alias: proto.Uint64(alias), Timestamp: proto.Uint64(ts)}
	if name != "" {
		m.Name = proto.String(name)
		m.Datatype = proto.Uint32(uint32(dt))
	}
	sparkplug.SetValue(m, dt, v)
	return m
}

// TestHostWithForeignNode drives the host with births and data that carry
// no Calx properties, a sequence gap, a malformed payload and a death.
func TestHostWithForeignNode(t *testing.T) {
	c := startCloud(t)
	cl, err := dial(t, c, "e1", "pw1")
	if err != nil {
		t.Fatal(err)
	}
	cmds := make(chan string, 10)
	cl.Subscribe("spBv1.0/g/NCMD/e1", 1, func(_ paho.Client, m paho.Message) {
		p, err := sparkplug.Decode(m.Payload())
		// The node's birth gave Node Control/Rebirth alias 0: the command
		// names it by that alias alone.
		if err == nil && len(p.Metrics) == 1 && p.Metrics[0].Name == nil && p.Metrics[0].GetAlias() == 0 && p.Metrics[0].GetBooleanValue() {
			cmds <- "rebirth"
		}
	}).WaitTimeout(5 * time.Second)
	f := &foreign{t: t, cl: cl}
	ts := uint64(time.Now().UnixMilli())
	f.send(sparkplug.NBIRTH, "", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(7), ts),
		metric("Node Control/Rebirth", 0, pb.DataType_Boolean, uns.Bool(false), ts),
	}})
	f.send(sparkplug.DBIRTH, "pump", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric("speed", 1, pb.DataType_Float, uns.Float(50), ts),
		metric("mode", 2, pb.DataType_String, uns.String("auto"), ts),
	}})
	for i := 1; i <= 5; i++ {
		f.send(sparkplug.DDATA, "pump", &pb.Payload{Timestamp: proto.Uint64(ts + uint64(i)), Metrics: []*pb.Payload_Metric{
			metric("", 1, pb.DataType_Float, uns.Float(50+float64(i)), ts+uint64(i)),
		}})
	}
	path := uns.Path("g/e1/pump/speed")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		n, err := c.Historian.Count(context.Background(), path)
		if err == nil && n != 6 {
			err = fmt.Errorf("%d points of %s", n, path)
		}
		return err
	})
	tag, ok := c.Registry.Get(path)
	if !ok || tag.Sparkplug != (uns.SparkplugAddr{Group: "g", Edge: "e1", Device: "pump", Metric: "speed"}) || tag.Value.F != 55 {
		t.Fatalf("registry: %+v", tag)
	}

	// A malformed payload is counted and skipped; a message lost on the way
	// (seq jumps) makes the host ask for a rebirth.
	f.raw("spBv1.0/g/DDATA/e1/pump", []byte{0x12, 0x10, 0x0a})
	f.seq += 3
	f.send(sparkplug.DDATA, "pump", &pb.Payload{Timestamp: proto.Uint64(ts + 10), Metrics: []*pb.Payload_Metric{
		metric("", 1, pb.DataType_Float, uns.Float(60), ts+10),
	}})
	select {
	case <-cmds:
	case <-time.After(10 * time.Second):
		t.Fatal("no rebirth request after a sequence gap")
	}
	st := c.Host.Stats()
	if st.Malformed != 1 || st.SeqGaps != 1 || st.RebirthsAsked != 1 {
		t.Fatalf("host stats: %+v", st)
	}

	// NDEATH with an old bdSeq is ignored; with the current one the node
	// goes offline and its tags go bad.
	f.send(sparkplug.NDEATH, "", &pb.Payload{Metrics: []*pb.Payload_Metric{metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(6), 0)}})
	f.send(sparkplug.NDEATH, "", &pb.Payload{Metrics: []*pb.Payload_Metric{metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(7), 0)}})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		tag, _ := c.Registry.Get(path)
		if tag.Quality != uns.Bad {
			return fmt.Errorf("quality %v", tag.Quality)
		}
		for _, n := range c.Host.Nodes() {
			if n.Online {
				return fmt.Errorf("node %s still online", n.Edge)
			}
		}
		return nil
	})
	if c.Host.Stats().StaleDeathsIgnrd != 1 {
		t.Errorf("stale death not counted: %+v", c.Host.Stats())
	}
	if tag, _ := c.Registry.Get(path); tag.Value.F != 60 {
		t.Errorf("last value after death = %+v, want 60 kept", tag.Value)
	}
}

// TestEdgeCannotImpersonate checks that a publish as another edge is
// dropped by the ACL and never reaches the backbone.
func TestEdgeCannotImpersonate(t *testing.T) {
	c := startCloud(t)
	cl, err := dial(t, c, "e2", "pw2")
	if err != nil {
		t.Fatal(err)
	}
	f := &foreign{t: t, cl: cl}
	ts := uint64(time.Now().UnixMilli())
	f.send(sparkplug.NBIRTH, "", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(0), ts),
		metric("x", 1, pb.DataType_Double, uns.Float(1), ts),
	}})
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if c.Broker.Stats().AuthDenied == 0 {
			return fmt.Errorf("no ACL denial yet")
		}
		return nil
	})
	if n := c.Broker.Stats().Persisted; n != 0 {
		t.Fatalf("%d messages persisted from an impersonating edge", n)
	}
	if c.Registry.Len() != 0 || !strings.Contains(fmt.Sprint(c.Host.Nodes()), "[]") {
		t.Fatalf("impersonated node known to the host: %v", c.Host.Nodes())
	}
}

// A cloud with no accounts at all is still closed to anonymous clients.
func TestNoOpenBroker(t *testing.T) {
	c, err := New(Options{DataDir: t.TempDir(), MQTT: BrokerOptions{Listen: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stuck.Within(t, time.Minute, "the cloud's shutdown", func() { c.Shutdown(context.Background()) })
	})
	if _, err := dial(t, c, "", ""); err == nil {
		t.Fatal("anonymous client accepted")
	}
}

// Provisioned accounts: an edge identity acts only as its edge node; a
// custom account is held to its filters; both survive a restart.
func TestProvisionedAccounts(t *testing.T) {
	dir := t.TempDir()
	start := func() *Cloud {
		c, err := New(Options{DataDir: dir, MQTT: BrokerOptions{Listen: "127.0.0.1:0"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := start()
	user, pw, err := c.ProvisionEdge(context.Background(), "g", "new-edge")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ProvisionEdge(context.Background(), "g", "new-edge"); !errors.Is(err, ErrUserExists) {
		t.Fatalf("second provisioning of the same edge: %v", err)
	}
	if _, _, err := c.ProvisionEdge(context.Background(), "g", "a/b"); !errors.Is(err, ErrBadAccount) {
		t.Fatalf("bad edge id: %v", err)
	}
	h := mustHash(t, "consumer-pw")
	if err := c.AddMQTTUser(context.Background(), MQTTUser{Username: "consumer", PasswordHash: h, Role: RoleCustom,
		Subscribe: []string{"uns/#"}, Publish: []string{"apps/consumer/+"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.AddMQTTUser(context.Background(), MQTTUser{Username: "broken", PasswordHash: h, Role: RoleCustom,
		Subscribe: []string{"a/#/b"}}); !errors.Is(err, ErrBadAccount) {
		t.Fatalf("bad filter accepted: %v", err)
	}
	c.Shutdown(context.Background())

	c = start()
	t.Cleanup(func() {
		stuck.Within(t, time.Minute, "the cloud's shutdown", func() { c.Shutdown(context.Background()) })
	})
	if _, err := dial(t, c, user, pw); err != nil {
		t.Fatalf("provisioned edge after restart: %v", err)
	}
	if _, err := dial(t, c, user, "wrong"); err == nil {
		t.Fatal("provisioned edge with a wrong password accepted")
	}
	cl, err := dial(t, c, "consumer", "consumer-pw")
	if err != nil {
		t.Fatalf("custom account after restart: %v", err)
	}
	for filter, ok := range map[string]bool{"uns/limeworks/#": true, "uns/#": true, "#": false, "spBv1.0/#": false} {
		tok := cl.Subscribe(filter, 0, nil)
		tok.WaitTimeout(5 * time.Second)
		codes := tok.(*paho.SubscribeToken).Result()
		if granted := codes[filter] < 0x80; granted != ok {
			t.Errorf("subscribe %s: granted=%v (code %#x), want %v", filter, granted, codes[filter], ok)
		}
	}
}

func TestFilters(t *testing.T) {
	for _, tc := range []struct {
		allowed, requested string
		covers             bool
	}{
		{"uns/#", "uns/a/b", true}, {"uns/#", "uns/+/b", true}, {"uns/#", "uns/#", true}, {"uns/#", "uns", true},
		{"uns/+/b", "uns/a/b", true}, {"uns/+/b", "uns/+/b", true}, {"uns/+/b", "uns/#", false},
		{"uns/a", "uns/+", false}, {"uns/a", "uns/a/b", false}, {"a/b", "a/b", true},
	} {
		if got := filterCovers(tc.allowed, tc.requested); got != tc.covers {
			t.Errorf("%s covers %s = %v, want %v", tc.allowed, tc.requested, got, tc.covers)
		}
	}
	for _, tc := range []struct {
		filter, topic string
		match         bool
	}{
		{"apps/consumer/+", "apps/consumer/x", true}, {"apps/consumer/+", "apps/consumer/x/y", false},
		{"a/#", "a", true}, {"a/#", "b", false}, {"+/+", "a/b", true},
	} {
		if got := topicMatches(tc.filter, tc.topic); got != tc.match {
			t.Errorf("%s matches %s = %v, want %v", tc.filter, tc.topic, got, tc.match)
		}
	}
	for _, bad := range []string{"", "a/#/b", "a/b#", "a+/b"} {
		if ValidFilter(bad) == nil {
			t.Errorf("filter %q accepted", bad)
		}
	}
}

// TestHostComplexTypes: template instances become one tag per member;
// arrays, data sets and bytes are kept as JSON text, not dropped.
func TestHostComplexTypes(t *testing.T) {
	c := startCloud(t)
	cl, err := dial(t, c, "e1", "pw1")
	if err != nil {
		t.Fatal(err)
	}
	f := &foreign{t: t, cl: cl}
	ts := uint64(time.Now().UnixMilli())
	member := func(name string, dt pb.DataType, v uns.Value) *pb.Payload_Metric {
		m := metric(name, 0, dt, v, ts)
		m.Alias = nil
		return m
	}
	def := &pb.Payload_Metric{Name: proto.String("_types_/Motor"), Datatype: proto.Uint32(uint32(pb.DataType_Template)),
		Value: &pb.Payload_Metric_TemplateValue{TemplateValue: &pb.Payload_Template{IsDefinition: proto.Bool(true),
			Metrics: []*pb.Payload_Metric{member("speed", pb.DataType_Double, uns.Float(0)), member("running", pb.DataType_Boolean, uns.Bool(false))}}}}
	f.send(sparkplug.NBIRTH, "", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(0), ts), def}})
	inst := &pb.Payload_Metric{Name: proto.String("motor"), Alias: proto.Uint64(1), Timestamp: proto.Uint64(ts), Datatype: proto.Uint32(uint32(pb.DataType_Template)),
		Value: &pb.Payload_Metric_TemplateValue{TemplateValue: &pb.Payload_Template{TemplateRef: proto.String("Motor"),
			Metrics: []*pb.Payload_Metric{member("speed", pb.DataType_Double, uns.Float(1450)), member("running", pb.DataType_Boolean, uns.Bool(true))}}}}
	arr := &pb.Payload_Metric{Name: proto.String("profile"), Alias: proto.Uint64(2), Timestamp: proto.Uint64(ts), Datatype: proto.Uint32(uint32(pb.DataType_Int16Array)),
		Value: &pb.Payload_Metric_BytesValue{BytesValue: []byte{0x01, 0x00, 0xff, 0xff}}}
	ds := &pb.Payload_Metric{Name: proto.String("recipe"), Alias: proto.Uint64(3), Timestamp: proto.Uint64(ts), Datatype: proto.Uint32(uint32(pb.DataType_DataSet)),
		Value: &pb.Payload_Metric_DatasetValue{DatasetValue: &pb.Payload_DataSet{NumOfColumns: proto.Uint64(1), Columns: []string{"step"},
			Types: []uint32{uint32(pb.DataType_Int32)}, Rows: []*pb.Payload_DataSet_Row{{Elements: []*pb.Payload_DataSet_DataSetValue{{Value: &pb.Payload_DataSet_DataSetValue_IntValue{IntValue: 7}}}}}}}}
	blob := &pb.Payload_Metric{Name: proto.String("blob"), Alias: proto.Uint64(4), Timestamp: proto.Uint64(ts), Datatype: proto.Uint32(uint32(pb.DataType_Bytes)),
		Value: &pb.Payload_Metric_BytesValue{BytesValue: []byte{1, 2, 3}}}
	f.send(sparkplug.DBIRTH, "m", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{inst, arr, ds, blob}})
	speed := member("speed", pb.DataType_Double, uns.Float(1500))
	speed.Timestamp = nil // takes the instance's timestamp
	upd := &pb.Payload_Metric{Alias: proto.Uint64(1), Timestamp: proto.Uint64(ts + 1000),
		Value: &pb.Payload_Metric_TemplateValue{TemplateValue: &pb.Payload_Template{Metrics: []*pb.Payload_Metric{speed}}}}
	f.send(sparkplug.DDATA, "m", &pb.Payload{Timestamp: proto.Uint64(ts + 1000), Metrics: []*pb.Payload_Metric{upd}})

	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		tag, ok := c.Registry.Get("g/e1/m/motor/speed")
		if !ok || tag.Value.F != 1500 {
			return fmt.Errorf("motor/speed = %+v", tag.Value)
		}
		return nil
	})
	for path, want := range map[uns.Path]string{
		"g/e1/m/motor/running": "true",
		"g/e1/m/profile":       "[1,-1]",
		"g/e1/m/recipe":        `{"columns":["step"],"rows":[[7]],"types":["Int32"]}`,
		"g/e1/m/blob":          `"AQID"`,
	} {
		tag, ok := c.Registry.Get(path)
		if !ok {
			t.Errorf("%s not in the namespace", path)
			continue
		}
		if got := fmt.Sprint(tag.Value.Any()); got != want {
			t.Errorf("%s = %s, want %s", path, got, want)
		}
	}
	if tag, _ := c.Registry.Get("g/e1/m/recipe"); tag.DataType != uns.TypeJSON {
		t.Errorf("recipe datatype %v", tag.DataType)
	}
	if _, ok := c.Registry.Get("g/_edge/e1/_types_/Motor"); ok {
		t.Error("a template definition became a tag")
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n, _ := c.Historian.Count(context.Background(), "g/e1/m/motor/speed"); n != 2 {
			return fmt.Errorf("motor/speed history: %d points", n)
		}
		return nil
	})
}

// Sparkplug 3.0 host-application: a primary host that sees its own STATE
// offline while running publishes online again; a clean stop leaves
// STATE offline retained.
func TestHostStateOnlineOffline(t *testing.T) {
	c := startCloud(t)
	cl, err := dial(t, c, "reader", "pwr")
	if err != nil {
		t.Fatal(err)
	}
	states := make(chan string, 10)
	cl.Subscribe("spBv1.0/STATE/calx", 1, func(_ paho.Client, m paho.Message) {
		var st struct {
			Online    bool   `json:"online"`
			Timestamp uint64 `json:"timestamp"`
		}
		if json.Unmarshal(m.Payload(), &st) != nil || st.Timestamp == 0 {
			states <- "bad: " + string(m.Payload())
			return
		}
		states <- fmt.Sprintf("online=%v retained=%v qos=%d", st.Online, m.Retained(), m.Qos())
	}).WaitTimeout(5 * time.Second)
	if got := <-states; got != "online=true retained=true qos=1" {
		t.Fatalf("first STATE: %s", got)
	}
	c.Broker.Publish("spBv1.0/STATE/calx", []byte(`{"online":false,"timestamp":1}`), true, 1)
	<-states // the offline one
	select {
	case got := <-states:
		if got != "online=true retained=false qos=1" {
			t.Fatalf("after a foreign offline: %s", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("host did not declare itself online again")
	}
	c.Host.goOffline()
	if got := <-states; !strings.HasPrefix(got, "online=false") {
		t.Fatalf("clean stop: %s", got)
	}
}

// Retained messages carry no expiry: the host's STATE, published once,
// must still gate edges' births after the cloud has run for days, and a
// tag that does not change keeps its retained UNS value.
func TestRetainedMessagesDoNotExpire(t *testing.T) {
	c := startCloud(t)
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		pk, ok := c.Broker.srv.Topics.Retained.Get("spBv1.0/STATE/calx")
		if !ok {
			return fmt.Errorf("no retained STATE")
		}
		if pk.Expiry != 0 {
			return fmt.Errorf("retained STATE expires at %s", time.Unix(pk.Expiry, 0))
		}
		return nil
	})
	if got := c.Broker.srv.Options.Capabilities.MaximumMessageExpiryInterval; got != 0 {
		t.Fatalf("retained messages are dropped %d s after they were published", got)
	}
}

// Every current value is on the broker as UNS JSON, retained, for MQTT
// consumers.
func TestUNSRepublishedOnMQTT(t *testing.T) {
	c := startCloud(t)
	cl, err := dial(t, c, "e1", "pw1")
	if err != nil {
		t.Fatal(err)
	}
	f := &foreign{t: t, cl: cl}
	ts := uint64(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC).UnixMilli())
	f.send(sparkplug.NBIRTH, "", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(0), ts)}})
	speed := metric("speed", 1, pb.DataType_Double, uns.Float(50), ts)
	speed.Properties = sparkplug.Properties(sparkplug.PropEngUnit, "rpm")
	f.send(sparkplug.DBIRTH, "pump", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{speed,
		metric("on", 2, pb.DataType_Boolean, uns.Bool(true), ts)}})
	// Subscribe once both values are on the broker: they come as retained.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if sent, _, _ := c.RepublishStats(); sent < 2 {
			return fmt.Errorf("%d UNS values on the broker", sent)
		}
		return nil
	})
	reader, err := dial(t, c, "reader", "pwr")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 4)
	reader.Subscribe("uns/g/e1/pump/#", 0, func(_ paho.Client, m paho.Message) {
		got <- fmt.Sprintf("%s retained=%v %s", m.Topic(), m.Retained(), m.Payload())
	}).WaitTimeout(5 * time.Second)
	want := map[string]bool{
		`uns/g/e1/pump/speed retained=true {"value":50,"ts":"2026-03-04T05:06:07Z","quality":"good","unit":"rpm"}`: true,
		`uns/g/e1/pump/on retained=true {"value":true,"ts":"2026-03-04T05:06:07Z","quality":"good"}`:               true,
	}
	for range want {
		select {
		case m := <-got:
			if !want[m] {
				t.Errorf("unexpected UNS message %s", m)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("retained UNS messages missing")
		}
	}
}

// TestDisconnectSendsWill: a connection the cloud drops ends like a failed
// network, Will and all, even while the client is busy publishing.
func TestDisconnectSendsWill(t *testing.T) {
	c := startCloud(t)
	rd, err := dial(t, c, "reader", "pwr")
	if err != nil {
		t.Fatal(err)
	}
	wills := make(chan string, 16)
	tok := rd.Subscribe("spBv1.0/g/NDEATH/e1", 1, func(_ paho.Client, m paho.Message) { wills <- string(m.Payload()) })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	data, _ := proto.Marshal(&pb.Payload{Timestamp: proto.Uint64(1), Seq: proto.Uint64(0)})
	for i := range 10 {
		id := fmt.Sprintf("g.e1.%d", i)
		o := paho.NewClientOptions().AddBroker("tcp://"+c.Broker.Addr()).SetClientID(id).SetUsername("e1").SetPassword("pw1").
			SetAutoReconnect(false).SetWill("spBv1.0/g/NDEATH/e1", fmt.Sprint("will ", i), 1, false)
		cl := paho.NewClient(o)
		if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				cl.Publish("spBv1.0/g/NDATA/e1", 0, false, data).WaitTimeout(time.Second)
			}
		}()
		time.Sleep(20 * time.Millisecond)
		if err := c.Broker.Disconnect(id); err != nil {
			t.Fatal(err)
		}
		select {
		case w := <-wills:
			if w != fmt.Sprint("will ", i) {
				t.Fatalf("got %q, want will %d", w, i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no Will after disconnect %d", i)
		}
		close(stop)
		<-done
		cl.Disconnect(0)
	}
}

// TestReceiptsAfterTakeover: an edge that reconnects under its client id
// while the broker still holds the old connection gets receipts for the new
// session; the old connection's end must not take the new count with it,
// nor the old connection's start, when mochi reports it late (odd rounds
// replay it after the takeover).
func TestReceiptsAfterTakeover(t *testing.T) {
	c := startCloud(t)
	will := func(bd int64) []byte {
		b, _ := proto.Marshal(&pb.Payload{Metrics: []*pb.Payload_Metric{metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(bd), 0)}})
		return b
	}
	connect := func(bd int64) paho.Client {
		o := paho.NewClientOptions().AddBroker("tcp://"+c.Broker.Addr()).SetClientID("g.e1").SetUsername("e1").SetPassword("pw1").
			SetAutoReconnect(false).SetBinaryWill("spBv1.0/g/NDEATH/e1", will(bd), 1, false)
		cl := paho.NewClient(o)
		if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("connect: %v", tok.Error())
		}
		t.Cleanup(func() { cl.Disconnect(0) })
		return cl
	}
	for round := range 6 {
		connect(int64(2 * round))
		first, ok := c.Broker.srv.Clients.Get("g.e1")
		if !ok {
			t.Fatal("the first connection is not in the broker")
		}
		cl := connect(int64(2*round + 1)) // takes the session over
		if round%2 == 1 {
			c.Broker.ingest.OnSessionEstablished(first, packets.Packet{Connect: packets.ConnectParams{
				WillFlag: true, WillTopic: "spBv1.0/g/NDEATH/e1", WillPayload: will(int64(2 * round))}})
		}
		receipts := make(chan sparkplug.Receipt, 16)
		tok := cl.Subscribe(sparkplug.ReceiptTopic("g", "e1"), 1, func(_ paho.Client, m paho.Message) {
			var r sparkplug.Receipt
			if json.Unmarshal(m.Payload(), &r) == nil {
				receipts <- r
			}
		})
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Fatalf("subscribe: %v", tok.Error())
		}
		time.Sleep(50 * time.Millisecond) // the old connection's end has run
		f := &foreign{t: t, cl: cl}
		for range 5 {
			f.send(sparkplug.NDATA, "", &pb.Payload{Timestamp: proto.Uint64(1)})
		}
		deadline := time.After(5 * time.Second)
	wait:
		for {
			select {
			case r := <-receipts:
				if r.BdSeq == uint64(2*round+1) && r.Count == 5 && r.Seq == 4 {
					break wait
				}
			case <-deadline:
				t.Fatalf("round %d: no receipt for the 5 messages of the new session", round)
			}
		}
		cl.Disconnect(0)
		// The broker ends the session before the next round connects:
		// mochi's end of a closed session goes by client id.
		for end := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if _, ok := c.Broker.srv.Clients.Get("g.e1"); !ok {
				break
			}
			if time.Now().After(end) {
				t.Fatalf("round %d: the broker keeps the closed session", round)
			}
		}
	}
}

// TestStartContextEndsBeforeShutdown: calx cloud starts with the signal
// context, so a SIGTERM ends it before Shutdown runs. The host, transforms
// and archiver must keep working until Shutdown stops them in order, or the
// drain waits on a stopped archiver and values wait for the next start.
func TestStartContextEndsBeforeShutdown(t *testing.T) {
	opts := Options{DataDir: t.TempDir(), MQTT: BrokerOptions{Listen: "127.0.0.1:0", Users: []MQTTUser{
		{Username: "e1", PasswordHash: mustHash(t, "pw1"), Role: RoleEdge, Group: "g", EdgeID: "e1"},
	}}}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stuck.Within(t, time.Minute, "the cloud's shutdown", func() { c.Shutdown(context.Background()) })
	})
	cancel() // the signal
	// Data comes after the loops' fetches in hand have ended (they wait
	// up to 200 ms), so only loops still running can take it.
	time.Sleep(500 * time.Millisecond)

	cl, err := dial(t, c, "e1", "pw1")
	if err != nil {
		t.Fatal(err)
	}
	f := &foreign{t: t, cl: cl}
	ts := uint64(time.Now().UnixMilli())
	f.send(sparkplug.NBIRTH, "", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(1), ts),
	}})
	f.send(sparkplug.DBIRTH, "pump", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric("speed", 1, pb.DataType_Float, uns.Float(50), ts),
	}})
	for i := 1; i <= 3; i++ {
		f.send(sparkplug.DDATA, "pump", &pb.Payload{Timestamp: proto.Uint64(ts + uint64(i)), Metrics: []*pb.Payload_Metric{
			metric("", 1, pb.DataType_Float, uns.Float(50+float64(i)), ts+uint64(i)),
		}})
	}
	path := uns.Path("g/e1/pump/speed")
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		n, err := c.Historian.Count(context.Background(), path)
		if err == nil && n != 4 {
			err = fmt.Errorf("%d points of %s after the start context ended, want 4", n, path)
		}
		return err
	})
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := c.Shutdown(sctx); err != nil {
		t.Fatal(err)
	}
}
