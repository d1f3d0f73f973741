package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/internal/mosquitto"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// startUplinkCloud runs a cloud that is the primary host on mosq too.
func startUplinkCloud(t *testing.T, mosq *mosquitto.Broker) *Cloud {
	t.Helper()
	c := startCloudWith(t, Options{Uplink: &UplinkOptions{URL: "mqtt://" + mosq.Addr}})
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error { return c.ReadyErr() })
	return c
}

// The host on Mosquitto: it says it is online there (STATE, retained),
// takes a Calx edge's values into the history, gives the edge its
// receipts, and loses nothing when the broker restarts under both of them.
func TestHostOnMosquitto(t *testing.T) {
	mosq := mosquitto.Start(t)
	c := startUplinkCloud(t, mosq)

	// STATE online, retained, on the plant's broker.
	watcher := paho.NewClient(paho.NewClientOptions().AddBroker(mosq.URL()).SetClientID("watcher").SetAutoReconnect(false))
	if tok := watcher.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer watcher.Disconnect(10)
	states := make(chan map[string]any, 10)
	watcher.Subscribe("spBv1.0/STATE/calx", 1, func(_ paho.Client, m paho.Message) {
		var s map[string]any
		if json.Unmarshal(m.Payload(), &s) == nil && m.Retained() {
			states <- s
		}
	}).WaitTimeout(5 * time.Second)
	select {
	case s := <-states:
		if s["online"] != true {
			t.Fatalf("STATE %v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no retained STATE on the broker")
	}

	clock, err := sim.NewClock("clock", sim.ClockSettings{Period: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e, err := edge.New(edge.Options{Broker: mosq.URL(), Username: "e1", Password: "pw", Group: "g", EdgeID: "e1", PrimaryHost: "calx",
		DataDir: t.TempDir(), KeepAlive: 5 * time.Second, Devices: []edge.Device{{ID: "clock", Path: "ent/s/a/l/clock", Connector: clock}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			e.Shutdown(context.Background())
		}
	})
	path := uns.Path("ent/s/a/l/clock/counter")
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		if n, _ := c.Historian.Count(context.Background(), path); n < 20 {
			return fmt.Errorf("%d values", n)
		}
		return nil
	})
	// The broker restarts under the edge and the host.
	mosq.Restart()
	checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
		if !c.UplinkStats().Connected || !e.Online() {
			return errors.New("not back on the broker")
		}
		return nil
	})
	time.Sleep(time.Second)
	// Receipts come through the broker: the edge's buffer empties.
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if st := e.Stats(); st.BufferedMsgs > 2 {
			return fmt.Errorf("%d messages buffered, unconfirmed", st.BufferedMsgs)
		}
		return nil
	})
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopped = true
	// Every step of the counter, from its first to its last, is stored
	// once.
	var first, last float64
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		pts, err := c.Historian.History(context.Background(), path, time.Now().Add(-time.Hour), time.Now().Add(time.Minute), 100000)
		if err != nil || len(pts) == 0 {
			return fmt.Errorf("history: %v", err)
		}
		seen := map[float64]bool{}
		first, _ = pts[0].Value.AsFloat()
		last, _ = pts[len(pts)-1].Value.AsFloat()
		for _, p := range pts {
			v, ok := p.Value.AsFloat()
			if !ok {
				continue
			}
			if seen[v] {
				return fmt.Errorf("step %v stored twice", v)
			}
			seen[v] = true
		}
		for v := first; v <= last; v++ {
			if !seen[v] {
				return fmt.Errorf("step %v of %v..%v missing", v, first, last)
			}
		}
		return nil
	})
	t.Logf("steps %v..%v stored once each across a broker restart; uplink %+v", first, last, c.UplinkStats())
}

// cutter forwards TCP connections to a target until cut: then it closes
// them all at once, as a network that fails would, and takes new ones.
type cutter struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutter(t *testing.T, target string) *cutter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := &cutter{ln: ln}
	t.Cleanup(func() { ln.Close(); c.cut() })
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			c.mu.Lock()
			c.conns = append(c.conns, a, b)
			c.mu.Unlock()
			go func() { io.Copy(a, b); a.Close() }()
			go func() { io.Copy(b, a); b.Close() }()
		}
	}()
	return c
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.conns = nil
}

// When the host's connection to the plant's broker fails, the broker
// publishes the host's Will: STATE offline, retained, with the timestamp
// of that connection's STATE online; the host comes back online by itself.
func TestHostWillOnMosquitto(t *testing.T) {
	mosq := mosquitto.Start(t)
	link := newCutter(t, mosq.Addr)
	c := startCloudWith(t, Options{Uplink: &UplinkOptions{URL: "tcp://" + link.ln.Addr().String()}})
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error { return c.ReadyErr() })
	watcher := paho.NewClient(paho.NewClientOptions().AddBroker(mosq.URL()).SetClientID("watcher").SetAutoReconnect(false))
	if tok := watcher.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer watcher.Disconnect(10)
	type state struct {
		Online    bool   `json:"online"`
		Timestamp uint64 `json:"timestamp"`
	}
	states := make(chan state, 10)
	watcher.Subscribe("spBv1.0/STATE/calx", 1, func(_ paho.Client, m paho.Message) {
		var s state
		if json.Unmarshal(m.Payload(), &s) == nil {
			states <- s
		}
	}).WaitTimeout(5 * time.Second)
	next := func() state {
		t.Helper()
		select {
		case s := <-states:
			return s
		case <-time.After(15 * time.Second):
			t.Fatal("no STATE")
		}
		return state{}
	}
	born := next()
	if !born.Online {
		t.Fatalf("first STATE %+v", born)
	}
	link.cut()
	if died := next(); died.Online || died.Timestamp != born.Timestamp {
		t.Fatalf("Will %+v after birth %+v: want offline with the birth's timestamp", died, born)
	}
	if again := next(); !again.Online || again.Timestamp <= born.Timestamp {
		t.Fatalf("after the cut %+v: want online again, later", again)
	}
}

// Receipts through the plant's broker count an edge session's messages
// in seq order: a message delivered again counts once, a rebirth within
// the session counts as the next message, a gap breaks the count (the
// edge then gets a receipt it cannot match, and sends again).
func TestUplinkReceiptCounting(t *testing.T) {
	u := &uplink{sessions: map[string]*uplinkSession{}}
	topic := func(typ sparkplug.MsgType) sparkplug.Topic {
		return sparkplug.Topic{Group: "g", Edge: "e", Type: typ, Device: map[bool]string{true: "d"}[typ == sparkplug.DDATA]}
	}
	msg := func(seq uint64, ts uint64, bd bool) []byte {
		p := &pb.Payload{Timestamp: proto.Uint64(ts), Seq: proto.Uint64(seq)}
		if bd {
			p.Metrics = []*pb.Payload_Metric{{Name: proto.String(sparkplug.MetricBdSeq), Value: &pb.Payload_Metric_LongValue{LongValue: 3}}}
		}
		b, _ := proto.Marshal(p)
		return b
	}
	u.count(topic(sparkplug.NBIRTH), msg(0, 100, true))
	u.count(topic(sparkplug.DDATA), msg(1, 101, false))
	u.count(topic(sparkplug.DDATA), msg(1, 101, false)) // again
	u.count(topic(sparkplug.NBIRTH), msg(0, 100, true)) // the birth again
	u.count(topic(sparkplug.NBIRTH), msg(0, 200, true)) // a rebirth
	u.count(topic(sparkplug.DDATA), msg(1, 201, false))
	s := u.sessions["g/e"]
	if s.count != 4 || s.seq != 1 || s.broken || u.dups.Load() != 2 {
		t.Fatalf("session %+v, duplicates %d", s, u.dups.Load())
	}
	u.count(topic(sparkplug.DDATA), msg(5, 202, false)) // a gap
	if !s.broken || u.gaps.Load() != 1 {
		t.Fatalf("after a gap: %+v", s)
	}
}
