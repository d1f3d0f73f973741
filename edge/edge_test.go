package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

func checkFor(t *testing.T, total, sleep time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(sleep)
	}
	t.Fatalf("condition not met in %s: %v", total, err)
}

type msg struct {
	topic sparkplug.Topic
	p     *pb.Payload
}

// recorder is a real embedded broker that records every Sparkplug message.
type recorder struct {
	srv    *mqtt.Server
	addr   string
	mu     sync.Mutex
	msgs   []msg
	topics []string // of every client publish, in order
}

func startBroker(t *testing.T) *recorder {
	t.Helper()
	r := &recorder{srv: mqtt.New(&mqtt.Options{InlineClient: true})}
	if err := r.srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := r.srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := r.srv.Serve(); err != nil {
		t.Fatal(err)
	}
	r.addr = tcp.Address()
	err := r.srv.Subscribe("spBv1.0/+/+/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		tp, err := sparkplug.ParseTopic(pk.TopicName)
		if err != nil || tp.Type == sparkplug.STATE || tp.Type == sparkplug.NCMD {
			return
		}
		p, err := sparkplug.Decode(pk.Payload)
		if err != nil {
			t.Errorf("edge sent a malformed payload on %s: %v", pk.TopicName, err)
			return
		}
		r.mu.Lock()
		r.msgs = append(r.msgs, msg{tp, p})
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.srv.AddHook(&orderHook{r: r}, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.srv.Close() })
	return r
}

// orderHook records the topic of every publish a client sends.
type orderHook struct {
	mqtt.HookBase
	r *recorder
}

func (*orderHook) ID() string           { return "order" }
func (*orderHook) Provides(b byte) bool { return b == mqtt.OnPublish }
func (h *orderHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !cl.Net.Inline {
		h.r.mu.Lock()
		h.r.topics = append(h.r.topics, pk.TopicName)
		h.r.mu.Unlock()
	}
	return pk, nil
}

func (r *recorder) order() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.topics...)
}

func (r *recorder) all() []msg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]msg(nil), r.msgs...)
}

func (r *recorder) state(online bool, ts uint64) {
	b, _ := json.Marshal(map[string]any{"online": online, "timestamp": ts})
	r.srv.Publish("spBv1.0/STATE/calx", b, true, 1)
}

// fakeDevice is a connector whose reads the test controls.
type fakeDevice struct {
	ch     chan []Reading
	writes chan string
}

func (f *fakeDevice) Tags() []TagDef {
	return []TagDef{
		{Name: "temp", DataType: uns.TypeFloat64, Unit: "°C", Low: 0, High: 1400, Deadband: uns.Deadband{Abs: 1}, AlarmHigh: ptr(1300.0)},
		{Name: "state", DataType: uns.TypeString},
		{Name: "setpoint", DataType: uns.TypeFloat64, Writable: true, WriteMin: ptr(0.0), WriteMax: ptr(100.0)},
	}
}

func (f *fakeDevice) Run(ctx context.Context, sink Sink) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case rs := <-f.ch:
			if rs == nil {
				sink.Lost(errors.New("unplugged"))
				continue
			}
			sink.Emit(rs)
		}
	}
}

func (f *fakeDevice) Write(ctx context.Context, tag string, v uns.Value) error {
	f.writes <- fmt.Sprintf("%s=%v", tag, v.Any())
	return nil
}

// startBornEdge starts an edge with one fake device against a recorder
// whose primary host is online, and waits for its birth.
func startBornEdge(t *testing.T) (*recorder, *fakeDevice, *Edge) {
	t.Helper()
	r := startBroker(t)
	r.state(true, uint64(time.Now().UnixMilli()))
	dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
	e := startEdge(t, r, t.TempDir(), dev)
	waitBorn(t, e)
	return r, dev, e
}

func startEdge(t *testing.T, r *recorder, dir string, dev *fakeDevice) *Edge {
	t.Helper()
	return startEdgeWith(t, context.Background(), Options{Broker: "tcp://" + r.addr, Username: "u", Password: "p", Group: "g", EdgeID: "e",
		PrimaryHost: "calx", DataDir: dir, Devices: []Device{{ID: "d1", Path: "ent/site/area/line/m1", Connector: dev}}})
}

// startEdgeWith starts an edge of opts with ctx; it stops with the test.
func startEdgeWith(t *testing.T, ctx context.Context, opts Options) *Edge {
	t.Helper()
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	return e
}

// waitBorn waits until the edge node is born.
func waitBorn(t *testing.T, e *Edge) {
	t.Helper()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !e.Online() {
			return fmt.Errorf("not born")
		}
		return nil
	})
}

// TestEdgeNodeBirthDataRebirth walks an edge node through its life against
// a real broker. The Sparkplug 3.0 requirements it checks are named in the
// failure messages:
//   - operational-behavior-edge-node-birth-sequence-wait: no birth before the primary host's STATE online
//   - topics-nbirth-mqtt, payloads-nbirth-seq, payloads-nbirth-bdseq: NBIRTH first, seq 0, bdSeq metric
//   - topics-dbirth-mqtt, payloads-dbirth-seq: DBIRTH next, seq 1, every metric with datatype and properties
//   - payloads-ddata-seq-inc, payloads-ddata-alias: data by alias only, seq increasing
//   - operational-behavior-edge-node-rebirth: NCMD rebirth gives NBIRTH seq 0 with the same bdSeq
//   - operational-behavior-edge-node-primary-host-offline: STATE offline gives NDEATH
func TestEdgeNodeBirthDataRebirth(t *testing.T) {
	r := startBroker(t)
	dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
	now := time.Now().Truncate(time.Millisecond)
	dev.ch <- []Reading{{Tag: "temp", TS: now, Value: uns.Float(20)}, {Tag: "state", TS: now, Value: uns.String("warmup")}}
	e := startEdge(t, r, t.TempDir(), dev)

	// No birth before the primary host is online.
	time.Sleep(300 * time.Millisecond)
	if n := len(r.all()); n != 0 {
		t.Fatalf("operational-behavior-edge-node-birth-sequence-wait: %d messages before the host's STATE", n)
	}
	r.state(true, uint64(time.Now().UnixMilli()))
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !e.Online() {
			return fmt.Errorf("not born")
		}
		return nil
	})
	dev.ch <- []Reading{{Tag: "temp", TS: now.Add(time.Second), Value: uns.Float(20.5)}} // within deadband
	dev.ch <- []Reading{{Tag: "temp", TS: now.Add(2 * time.Second), Value: uns.Float(25)}}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := len(r.all()); n < 4 {
			return fmt.Errorf("%d messages", n)
		}
		return nil
	})
	ms := r.all()
	if ms[0].topic.Type != sparkplug.NBIRTH || ms[0].p.GetSeq() != 0 {
		t.Fatalf("topics-nbirth-mqtt/payloads-nbirth-seq: first message %v seq %d, want NBIRTH seq 0", ms[0].topic, ms[0].p.GetSeq())
	}
	bd := ms[0].p.GetMetrics()[0]
	if bd.GetName() != sparkplug.MetricBdSeq || bd.GetLongValue() != 0 {
		t.Fatalf("payloads-nbirth-bdseq: NBIRTH first metric %v", bd)
	}
	if ms[1].topic.Type != sparkplug.DBIRTH || ms[1].topic.Device != "d1" || ms[1].p.GetSeq() != 1 {
		t.Fatalf("topics-dbirth-mqtt/payloads-dbirth-seq: second message %v seq %d, want DBIRTH d1 seq 1", ms[1].topic, ms[1].p.GetSeq())
	}
	var tempAlias uint64
	for _, m := range ms[1].p.GetMetrics() {
		if m.GetName() == "temp" {
			tempAlias = m.GetAlias()
			if m.GetDoubleValue() != 20 || pb.DataType(m.GetDatatype()) != pb.DataType_Double {
				t.Errorf("DBIRTH temp = %v", m)
			}
			if u, _ := sparkplug.PropertyString(m, sparkplug.PropEngUnit); u != "°C" {
				t.Errorf("DBIRTH temp unit %q", u)
			}
			if p, _ := sparkplug.PropertyString(m, sparkplug.PropUNSPath); p != "ent/site/area/line/m1/temp" {
				t.Errorf("DBIRTH temp UNS path %q", p)
			}
			if a, ok := sparkplug.PropertyFloat(m, sparkplug.PropAlarmHigh); !ok || a != 1300 {
				t.Errorf("DBIRTH temp alarm high %v %v", a, ok)
			}
			if _, ok := sparkplug.PropertyFloat(m, sparkplug.PropAlarmLow); ok {
				t.Errorf("DBIRTH temp has an alarm low it was not given")
			}
		}
	}
	// The value read before the birth is sent once more as historical; then
	// live data goes by alias only, without name or datatype.
	var live []*pb.Payload_Metric
	seq := uint64(1)
	for _, m := range ms[2:] {
		seq++
		if m.topic.Type != sparkplug.DDATA || m.p.GetSeq() != seq%256 {
			t.Fatalf("payloads-ddata-seq-inc: message %v seq %d, want DDATA seq %d", m.topic, m.p.GetSeq(), seq)
		}
		for _, x := range m.p.GetMetrics() {
			if x.Name != nil || x.Datatype != nil || x.GetAlias() == 0 {
				t.Errorf("payloads-ddata-alias: DDATA metric with name/datatype or no alias: %v", x)
			}
			if !x.GetIsHistorical() {
				live = append(live, x)
			}
		}
	}
	if len(live) != 1 || live[0].GetAlias() != tempAlias || live[0].GetDoubleValue() != 25 ||
		live[0].GetTimestamp() != uint64(now.Add(2*time.Second).UnixMilli()) {
		t.Fatalf("live DDATA metrics = %v (deadband should hold back 20.5)", live)
	}
	if st := e.Stats(); st.Filtered != 1 {
		t.Errorf("stats %+v: want 1 filtered", st)
	}

	// NCMD rebirth: NBIRTH again with seq 0 and the same bdSeq.
	cmd, _ := proto.Marshal(&pb.Payload{Metrics: []*pb.Payload_Metric{{Name: proto.String(sparkplug.MetricRebirth),
		Datatype: proto.Uint32(uint32(pb.DataType_Boolean)), Value: &pb.Payload_Metric_BooleanValue{BooleanValue: true}}}})
	before := len(r.all())
	r.srv.Publish("spBv1.0/g/NCMD/e", cmd, false, 0)
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if len(r.all()) < before+2 {
			return fmt.Errorf("no rebirth yet")
		}
		return nil
	})
	rb := r.all()[before]
	if rb.topic.Type != sparkplug.NBIRTH || rb.p.GetSeq() != 0 || rb.p.GetMetrics()[0].GetLongValue() != 0 {
		t.Fatalf("operational-behavior-edge-node-rebirth: after NCMD: %v seq %d", rb.topic, rb.p.GetSeq())
	}

	// STATE offline: the edge sends NDEATH and goes offline.
	r.state(false, uint64(time.Now().UnixMilli()))
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		ms := r.all()
		if last := ms[len(ms)-1]; last.topic.Type != sparkplug.NDEATH {
			return fmt.Errorf("operational-behavior-edge-node-primary-host-offline: last message %v", last.topic)
		}
		return nil
	})
}

func TestBdSeqPersistsAndWraps(t *testing.T) {
	dir := t.TempDir()
	s := bdSeqStore{path: filepath.Join(dir, "bdseq")}
	next := func() (uint64, error) {
		cur, err := s.peek()
		if err != nil {
			return 0, err
		}
		return cur, s.spend(cur)
	}
	for want := uint64(0); want < 3; want++ {
		got, err := next()
		if err != nil || got != want {
			t.Fatalf("next = %d, %v; want %d", got, err, want)
		}
	}
	if got, _ := s.peek(); got != 3 {
		t.Fatalf("peek = %d, want 3 (peek spends nothing)", got)
	}
	os.WriteFile(s.path, []byte("255"), 0o600)
	if got, _ := next(); got != 255 {
		t.Fatalf("got %d, want 255", got)
	}
	if got, _ := next(); got != 0 {
		t.Fatalf("after 255: %d, want 0", got)
	}
	os.WriteFile(s.path, []byte("banana"), 0o600)
	if _, err := s.peek(); err == nil {
		t.Fatal("corrupt bdSeq file accepted")
	}
}

// bdSeq counts CONNECT packets sent: dials that reach no broker spend
// none (Sparkplug 3.0: [tck-id-payloads-nbirth-bdseq-repeat]).
func TestBdSeqNotSpentOnFailedDials(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there: every dial is refused
	dir := t.TempDir()
	e, err := New(Options{Broker: "tcp://" + addr, Group: "g", EdgeID: "e", PrimaryHost: "calx", DataDir: dir, Devices: nil, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // several refused dials
	e.Shutdown(context.Background())
	if got, _ := (bdSeqStore{path: filepath.Join(dir, "bdseq")}).peek(); got != 0 {
		t.Fatalf("bdSeq %d after refused dials, want 0", got)
	}
	r := startBroker(t)
	r.state(true, uint64(time.Now().UnixMilli()))
	e2, err := New(Options{Broker: "tcp://" + r.addr, Group: "g", EdgeID: "e", PrimaryHost: "calx", DataDir: dir, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e2.Shutdown(context.Background()) })
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, m := range r.all() {
			if m.topic.Type == sparkplug.NBIRTH {
				if bd, _ := sparkplugBdSeq(m.p); bd != 0 {
					return fmt.Errorf("NBIRTH bdSeq %d, want 0", bd)
				}
				return nil
			}
		}
		return errors.New("no NBIRTH")
	})
}

func sparkplugBdSeq(p *pb.Payload) (int64, bool) {
	for _, m := range p.GetMetrics() {
		if m.GetName() == sparkplug.MetricBdSeq {
			return int64(m.GetLongValue()), true
		}
	}
	return 0, false
}

func TestOptionsValidate(t *testing.T) {
	o := Options{Broker: "localhost:1883", Group: "g/x", EdgeID: "", Devices: []Device{{ID: "d", Path: "a/#"}}}
	err := o.Validate()
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"broker", "group", "edge_id", "data_dir", "devices[0] path", "no connector"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// Sparkplug 3.0 operational-behavior-edge-node: a device that is lost is
// announced with DDEATH, and with a DBIRTH when it comes back, all within
// the node's seq; DCMD writes reach writable metrics only.
func TestDeviceDeathRebirthAndWrites(t *testing.T) {
	r := startBroker(t)
	dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
	now := time.Now()
	dev.ch <- []Reading{{Tag: "temp", TS: now, Value: uns.Float(20)}, {Tag: "setpoint", TS: now, Value: uns.Float(1)}}
	r.state(true, uint64(time.Now().UnixMilli()))
	e := startEdge(t, r, t.TempDir(), dev)
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !e.Online() {
			return fmt.Errorf("not born")
		}
		return nil
	})
	dev.ch <- nil // the device is unplugged
	dev.ch <- []Reading{{Tag: "temp", TS: now.Add(time.Second), Value: uns.Float(30)}}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		ms := r.all()
		var types []string
		for _, m := range ms {
			types = append(types, string(m.topic.Type))
		}
		got := strings.Join(types, " ")
		if !strings.Contains(got, "DDEATH DBIRTH DDATA") {
			return fmt.Errorf("messages: %s", got)
		}
		return nil
	})
	ms := r.all()
	for i := 1; i < len(ms); i++ {
		if ms[i].p.GetSeq() != (ms[i-1].p.GetSeq()+1)%256 {
			t.Fatalf("seq %d after %d (%v)", ms[i].p.GetSeq(), ms[i-1].p.GetSeq(), ms[i].topic)
		}
	}

	dcmd := func(name string, v float64) {
		p := &pb.Payload{Timestamp: proto.Uint64(uint64(time.Now().UnixMilli())), Metrics: []*pb.Payload_Metric{{
			Name: proto.String(name), Datatype: proto.Uint32(uint32(pb.DataType_Double)), Value: &pb.Payload_Metric_DoubleValue{DoubleValue: v}}}}
		b, _ := proto.Marshal(p)
		r.srv.Publish("spBv1.0/g/DCMD/e/d1", b, false, 0)
	}
	dcmd("temp", 99)             // read-only: refused
	dcmd("nosuch", 1)            // unknown: refused
	dcmd("setpoint", 100.5)      // over write_max: refused
	dcmd("setpoint", -1)         // under write_min: refused
	dcmd("setpoint", math.NaN()) // not a number: refused
	dcmd("setpoint", 5)          // writable
	select {
	case w := <-dev.writes:
		if w != "setpoint=5" {
			t.Fatalf("device got write %q", w)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("writable metric not written")
	}
	select {
	case w := <-dev.writes:
		t.Fatalf("unexpected write %q", w)
	case <-time.After(200 * time.Millisecond):
	}
	if n := e.Stats().WritesRefused; n != 3 {
		t.Errorf("writes refused: %d, want 3", n)
	}
	// The birth tells the cloud the writable range.
	var lo, hi float64
	for _, m := range r.all() {
		for _, pm := range m.p.GetMetrics() {
			if pm.GetName() == "setpoint" && m.topic.Type == sparkplug.DBIRTH {
				lo, _ = sparkplug.PropertyFloat(pm, sparkplug.PropWriteMin)
				hi, _ = sparkplug.PropertyFloat(pm, sparkplug.PropWriteMax)
			}
		}
	}
	if lo != 0 || hi != 100 {
		t.Errorf("birth's writable range %v..%v, want 0..100", lo, hi)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// The edge's own broker carries UNS JSON, retained, for consumers on site,
// and refuses their publishes.
func TestLocalBrokerUNSJSON(t *testing.T) {
	r := startBroker(t)
	r.state(true, uint64(time.Now().UnixMilli()))
	dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
	e, err := New(Options{Broker: "tcp://" + r.addr, Group: "g", EdgeID: "e", PrimaryHost: "calx", DataDir: t.TempDir(),
		LocalMQTT: "127.0.0.1:0", LocalAllowAnonymous: true, Devices: []Device{{ID: "d1", Path: "ent/site/area/line/m1", Connector: dev}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	ts := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	dev.ch <- []Reading{{Tag: "temp", TS: ts, Value: uns.Float(1101.5)}}
	cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + e.local.Addr()).SetClientID("site-reader"))
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to the local broker: %v", tok.Error())
	}
	defer cl.Disconnect(10)
	got := make(chan string, 4)
	cl.Subscribe("uns/#", 0, func(_ paho.Client, m paho.Message) { got <- m.Topic() + " " + string(m.Payload()) })
	select {
	case msg := <-got:
		want := `uns/ent/site/area/line/m1/temp {"value":1101.5,"ts":"2026-05-06T07:08:09Z","quality":"good","unit":"°C"}`
		if msg != want {
			t.Fatalf("got %s\nwant %s", msg, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no UNS message on the local broker")
	}
	// Retained until the tag changes: no expiry, however long it stays put.
	if pk, ok := e.local.srv.Topics.Retained.Get("uns/ent/site/area/line/m1/temp"); !ok || pk.Expiry != 0 {
		t.Fatalf("retained UNS value: %v, expires at %d", ok, pk.Expiry)
	}
	cl.Publish("uns/ent/site/area/line/m1/temp", 0, false, "forged").WaitTimeout(time.Second)
	select {
	case msg := <-got:
		t.Fatalf("a site client's publish went through: %s", msg)
	case <-time.After(300 * time.Millisecond):
	}
}

// With a host that sends no receipts (not a Calx cloud), what was sent more
// than one and a half keepalives ago is taken as delivered and trimmed.
func TestNoReceiptsFallback(t *testing.T) {
	r := startBroker(t)
	dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
	e, err := New(Options{Broker: "tcp://" + r.addr, Group: "g", EdgeID: "e", DataDir: t.TempDir(), KeepAlive: time.Second,
		Devices: []Device{{ID: "d1", Path: "ent/site/area/line/m1", Connector: dev}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	for i := range 5 {
		dev.ch <- []Reading{{Tag: "temp", TS: time.Now(), Value: uns.Float(float64(10 * i))}}
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if st := e.Stats(); st.Sent < 5 || st.BufferedMsgs == 0 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	// Sent but never receipted: kept for 1.5 keepalives, then trimmed.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if st := e.Stats(); st.BufferedMsgs != 0 {
			return fmt.Errorf("%d messages still buffered", st.BufferedMsgs)
		}
		return nil
	})
}

// Values of one tag that share a millisecond go out one millisecond apart,
// in order, so that neither is taken for the other sent again; a source
// clock that went further back is left alone.
func TestSameMillisecondValuesAreRestamped(t *testing.T) {
	r, dev, e := startBornEdge(t)
	t0 := time.Now().Truncate(time.Millisecond)
	for i, at := range []time.Duration{0, 300 * time.Microsecond, 600 * time.Microsecond, 2 * time.Millisecond, -time.Second} {
		dev.ch <- []Reading{{Tag: "state", TS: t0.Add(at), Value: uns.String(fmt.Sprint("s", i))}}
	}
	want := []string{"s0 +0ms", "s1 +1ms", "s2 +2ms", "s3 +3ms", "s4 -1000ms"}
	var got []string
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		got = got[:0]
		for _, m := range r.all() {
			if m.topic.Type != sparkplug.DDATA {
				continue
			}
			for _, mt := range m.p.GetMetrics() {
				if v := mt.GetStringValue(); strings.HasPrefix(v, "s") {
					got = append(got, fmt.Sprintf("%s %+dms", v, int64(mt.GetTimestamp())-t0.UnixMilli()))
				}
			}
		}
		if len(got) < len(want) {
			return fmt.Errorf("%d values sent", len(got))
		}
		return nil
	})
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("sent %v, want %v", got, want)
	}
	if n := e.Stats().Restamped; n != 3 {
		t.Fatalf("Restamped = %d, want 3", n)
	}
}

// Values buffered while a device was up and sent after it was lost go out
// between a DBIRTH and a DDEATH of their own: no data of a dead device.
func TestBacklogOfALostDeviceIsBornAndDiesAgain(t *testing.T) {
	r := startBroker(t)
	dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
	e := startEdge(t, r, t.TempDir(), dev)
	dev.ch <- []Reading{{Tag: "temp", TS: time.Now(), Value: uns.Float(20)}}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if st := e.Stats(); st.BufferedMsgs == 0 {
			return fmt.Errorf("nothing buffered")
		}
		return nil
	})
	dev.ch <- nil // lost before the node is born
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if cs := e.Connections(); len(cs) != 1 || cs[0].Connected {
			return fmt.Errorf("device not lost: %+v", cs)
		}
		return nil
	})
	r.state(true, uint64(time.Now().UnixMilli()))
	var got string
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var types []string
		for _, m := range r.all() {
			if m.topic.Device != "" || m.topic.Type == sparkplug.NBIRTH {
				types = append(types, string(m.topic.Type))
			}
		}
		got = strings.Join(types, " ")
		if !strings.Contains(got, "DDEATH") {
			return fmt.Errorf("messages: %s", got)
		}
		return nil
	})
	if got != "NBIRTH DBIRTH DDATA DDEATH" {
		t.Fatalf("messages %s, want NBIRTH DBIRTH DDATA DDEATH", got)
	}
	for _, m := range r.all() {
		if m.topic.Type == sparkplug.DDATA && !m.p.GetMetrics()[0].GetIsHistorical() {
			t.Fatal("buffered value not sent as historical")
		}
	}
}

func TestRateWindow(t *testing.T) {
	var w rateWindow
	t0 := time.Unix(1000, 0)
	if r, e := w.rates(t0, 0, 0); r != 0 || e != 0 {
		t.Fatalf("at start: %v %v", r, e)
	}
	if r, _ := w.rates(t0.Add(2*time.Second), 20, 0); r != 10 {
		t.Fatalf("after 2 s: %v reads/s, want 10", r)
	}
	// A window closes after 5 s; the rate spans the last closed one and
	// the open one: at 12 s, from 5 s on.
	w.rates(t0.Add(5*time.Second), 50, 1)
	w.rates(t0.Add(10*time.Second), 100, 1)
	r, e := w.rates(t0.Add(12*time.Second), 120, 8)
	if r != 10 || e != 1 {
		t.Fatalf("after 12 s: %v reads/s %v errors/s, want 10 and 1", r, e)
	}
}

// runCounter is a connector that counts how often it was started.
type runCounter struct {
	*fakeDevice
	runs *atomic.Int32
}

func (r runCounter) Run(ctx context.Context, sink Sink) error {
	r.runs.Add(1)
	return r.fakeDevice.Run(ctx, sink)
}

// Apply keeps an unchanged device running, restarts a changed one, starts a
// new one, announces a removed one dead, and births the node again.
func TestApplyChangesOnlyWhatChanged(t *testing.T) {
	r := startBroker(t)
	r.state(true, uint64(time.Now().UnixMilli()))
	var runsA, runsB, runsC atomic.Int32
	mk := func(runs *atomic.Int32) runCounter {
		return runCounter{&fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}, runs}
	}
	a, b := mk(&runsA), mk(&runsB)
	e, err := New(Options{Broker: "tcp://" + r.addr, Group: "g", EdgeID: "e", PrimaryHost: "calx", DataDir: t.TempDir(),
		Devices: []Device{{ID: "a", Path: "ent/site/area/line/a", Connector: a, Spec: "a1"}, {ID: "b", Path: "ent/site/area/line/b", Connector: b, Spec: "b1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if !e.Online() || runsA.Load() != 1 || runsB.Load() != 1 {
			return fmt.Errorf("not running")
		}
		return nil
	})
	b2, c := mk(&runsB), mk(&runsC)
	err = e.Apply([]Device{{ID: "a", Path: "ent/site/area/line/a", Connector: mk(&runsA), Spec: "a1"},
		{ID: "b", Path: "ent/site/area/line/b", Connector: b2, Spec: "b2"}, {ID: "c", Path: "ent/site/area/line/c", Connector: c, Spec: "c1"}})
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if runsA.Load() != 1 || runsB.Load() != 2 || runsC.Load() != 1 {
			return fmt.Errorf("runs a %d b %d c %d, want 1 2 1", runsA.Load(), runsB.Load(), runsC.Load())
		}
		return nil
	})
	a.ch <- []Reading{{Tag: "temp", TS: time.Now(), Value: uns.Float(50)}} // the first a still reads
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		var births int
		for _, m := range r.all() {
			if m.topic.Type == sparkplug.DBIRTH && m.topic.Device == "c" {
				births++
			}
		}
		if births == 0 || len(e.Connections()) != 3 {
			return fmt.Errorf("no DBIRTH of c, %d connections", len(e.Connections()))
		}
		return nil
	})
	// c goes away: dead on the wire, gone from the status.
	if err := e.Apply([]Device{{ID: "a", Path: "ent/site/area/line/a", Connector: mk(&runsA), Spec: "a1"},
		{ID: "b", Path: "ent/site/area/line/b", Connector: b2, Spec: "b2"}}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, m := range r.all() {
			if m.topic.Type == sparkplug.DDEATH && m.topic.Device == "c" {
				return nil
			}
		}
		return fmt.Errorf("no DDEATH of c")
	})
	if len(e.Connections()) != 2 || runsA.Load() != 1 {
		t.Fatalf("%d connections, a started %d times", len(e.Connections()), runsA.Load())
	}
	// A bad set changes nothing.
	if err := e.Apply([]Device{{ID: "a/b", Path: "ent/site/area/line/a", Connector: mk(&runsA), Spec: "x"}}); err == nil {
		t.Fatal("a device id with a slash applied")
	}
	if len(e.Connections()) != 2 {
		t.Fatalf("a refused set changed the devices")
	}
}

func ptr[T any](v T) *T { return &v }

// With accounts, the edge's own broker takes no anonymous client, readers
// only read, devices publish anywhere but under uns/.
func TestLocalBrokerAccounts(t *testing.T) {
	r := startBroker(t)
	r.state(true, uint64(time.Now().UnixMilli()))
	hash := func(pw string) string {
		h, _ := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		return string(h)
	}
	dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
	e, err := New(Options{Broker: "tcp://" + r.addr, Group: "g", EdgeID: "e", PrimaryHost: "calx", DataDir: t.TempDir(),
		LocalMQTT: "127.0.0.1:0", LocalUsers: []LocalUser{{Username: "hmi", PasswordHash: hash("hmi-pw"), Role: LocalReader},
			{Username: "plc", PasswordHash: hash("plc-pw"), Role: LocalDevice}},
		Devices: []Device{{ID: "d1", Path: "ent/site/area/line/m1", Connector: dev}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	connect := func(id, user, pw string) (paho.Client, error) {
		cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + e.LocalMQTTAddr()).SetClientID(id).SetUsername(user).SetPassword(pw))
		tok := cl.Connect()
		if !tok.WaitTimeout(5 * time.Second) {
			return nil, errors.New("no answer")
		}
		if tok.Error() == nil {
			t.Cleanup(func() { cl.Disconnect(10) })
		}
		return cl, tok.Error()
	}
	if _, err := connect("anon", "", ""); err == nil {
		t.Fatal("anonymous client accepted")
	}
	if _, err := connect("bad", "plc", "wrong"); err == nil {
		t.Fatal("wrong password accepted")
	}
	hmi, err := connect("hmi", "hmi", "hmi-pw")
	if err != nil {
		t.Fatal(err)
	}
	plc, err := connect("plc", "plc", "plc-pw")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 10)
	hmi.Subscribe("#", 0, func(_ paho.Client, m paho.Message) { got <- m.Topic() + " " + string(m.Payload()) }).WaitTimeout(5 * time.Second)
	hmi.Publish("site/from-hmi", 0, false, "x").WaitTimeout(time.Second)
	plc.Publish("uns/ent/site/area/line/m1/temp", 0, false, "forged").WaitTimeout(time.Second)
	plc.Publish("site/from-plc", 0, false, "ok").WaitTimeout(time.Second)
	select {
	case m := <-got:
		if m != "site/from-plc ok" {
			t.Fatalf("the reader got %q first", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the device's publish did not arrive")
	}
	select {
	case m := <-got:
		t.Fatalf("unexpected message %q", m)
	case <-time.After(200 * time.Millisecond):
	}
	if _, err := NewLocalBroker(LocalBrokerOptions{Listen: "127.0.0.1:0", Users: []LocalUser{{Username: "x", PasswordHash: "plain", Role: LocalReader}}, Logger: discardLogger()}); err == nil {
		t.Fatal("a password that is not a bcrypt hash accepted")
	}
}

// The node's own health goes out as node metrics in NBIRTH.
func TestNodeHealthMetrics(t *testing.T) {
	r, _, _ := startBornEdge(t)
	var nb *pb.Payload
	for _, m := range r.all() {
		if m.topic.Type == sparkplug.NBIRTH {
			nb = m.p
		}
	}
	got := map[string]*pb.Payload_Metric{}
	for _, m := range nb.GetMetrics() {
		got[m.GetName()] = m
	}
	for _, name := range []string{"Health/UptimeSeconds", "Health/CPUPercent", "Health/MemoryMiB", "Health/DiskFreeMiB", "Buffer/Bytes",
		"Buffer/OldestUnsentSeconds", "Buffer/FullPercent", "Buffer/Messages", "Buffer/Dropped", "Values/Filtered", "Values/ReductionPercent", "Receipt/DelayMs",
		"Config/Version", "Connections/d1/ReadsPerSec"} {
		if got[name] == nil {
			t.Errorf("NBIRTH lacks %s", name)
		}
	}
	if m := got["Health/MemoryMiB"]; m.GetDoubleValue() <= 0 || pb.DataType(m.GetDatatype()) != pb.DataType_Double {
		t.Errorf("memory %v", m)
	}
	if m := got["Health/DiskFreeMiB"]; m.GetDoubleValue() <= 0 {
		t.Errorf("disk free %v", m)
	}
}

// TestStartContextEndsBeforeShutdown: the context given to Start is for
// the start alone: when it ends (calx edge starts with the signal's),
// the edge goes on sending until Shutdown, which then says goodbye with
// its NDEATH.
func TestStartContextEndsBeforeShutdown(t *testing.T) {
	r := startBroker(t)
	r.state(true, uint64(time.Now().UnixMilli()))
	dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
	ctx, cancel := context.WithCancel(context.Background())
	e := startEdgeWith(t, ctx, Options{Broker: "tcp://" + r.addr, Username: "u", Password: "p", Group: "g", EdgeID: "e",
		PrimaryHost: "calx", DataDir: t.TempDir(), Devices: []Device{{ID: "d1", Path: "ent/site/area/line/m1", Connector: dev}}})
	waitBorn(t, e)
	cancel()
	time.Sleep(200 * time.Millisecond)
	dev.ch <- []Reading{{Tag: "temp", TS: time.Now(), Value: uns.Float(500)}}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, m := range r.all() {
			if m.topic.Type == sparkplug.DDATA {
				return nil
			}
		}
		return fmt.Errorf("no DDATA after the start context ended (online %v)", e.Online())
	})
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		for _, m := range r.all() {
			if m.topic.Type == sparkplug.NDEATH {
				return nil
			}
		}
		return fmt.Errorf("no NDEATH at Shutdown")
	})
}
