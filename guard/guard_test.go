package guard

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/internal/mqttraw"
)

// broker is a real mochi broker behind a guard Listener and Hook, that
// lets any client in (what it guards is not the password check).
type broker struct {
	srv  *mqtt.Server
	ln   *Listener
	hook *Hook
}

func startBroker(t *testing.T, l Limits) *broker {
	t.Helper()
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumMessageExpiryInterval = 0
	l.Apply(caps)
	log := slog.New(slog.DiscardHandler)
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: log})
	b := &broker{srv: srv, hook: NewHook(srv, l, log)}
	if err := srv.AddHook(b.hook, nil); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	var err error
	if b.ln, err = NewListener(ListenerOptions{ID: "t", Address: "127.0.0.1:0", Limits: l, Logger: log}); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddListener(b.ln); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return b
}

// dialFrom opens a TCP connection from a loopback address of its own.
func dialFrom(t *testing.T, from, to string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// connect opens a connection to addr and sends a CONNECT.
func connect(t *testing.T, addr string, s mqttraw.Session) (net.Conn, packets.Packet) {
	t.Helper()
	c := dialFrom(t, "127.0.0.1", addr)
	return c, mqttraw.Connect(t, c, s)
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

func waitFor(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A flood of sockets that never send CONNECT: past the per-address cap
// they are closed at once, the rest when the CONNECT deadline passes;
// another address, and then the flooding one, can still connect; the
// heap stays bounded.
func TestSilentSocketFlood(t *testing.T) {
	b := startBroker(t, Limits{MaxPerAddress: 50, ConnectTimeout: config.Duration(3 * time.Second)})
	addr := b.ln.Address()
	before := heapInUse()
	var flood []net.Conn
	for range 300 {
		flood = append(flood, dialFrom(t, "127.0.0.1", addr))
	}
	closedAtOnce := 0
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range flood {
		wg.Go(func() {
			if mqttraw.ClosedWithin(c, time.Second) {
				mu.Lock()
				closedAtOnce++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if closedAtOnce != 250 {
		t.Fatalf("%d of 300 closed at once, want the 250 over the cap of 50", closedAtOnce)
	}
	// While 127.0.0.1 is at its cap, another address gets in.
	if other := dialFrom(t, "127.0.0.2", addr); mqttraw.ClosedWithin(other, 100*time.Millisecond) {
		t.Fatal("a connection from another address was closed at once")
	}
	if grown := int64(heapInUse()) - int64(before); grown > 64<<20 {
		t.Fatalf("heap grew by %d MiB for 50 silent sockets", grown>>20)
	}
	for _, c := range flood {
		if !mqttraw.ClosedWithin(c, 5*time.Second) {
			t.Fatal("a silent socket outlived the CONNECT deadline")
		}
	}
	waitFor(t, 5*time.Second, func() error {
		if st := b.ln.Stats(); st.RefusedAddress != 250 || st.ConnectTimeouts < 50 || st.Open != 0 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	if _, ack := connect(t, addr, mqttraw.Session{ID: "after", User: "u", Clean: true}); ack.ReasonCode != 0 {
		t.Fatalf("connect after the flood: reason %#x", ack.ReasonCode)
	}
}

// The total cap holds across addresses.
func TestTotalConnectionCap(t *testing.T) {
	b := startBroker(t, Limits{MaxConnections: 20, ConnectTimeout: config.Duration(5 * time.Second)})
	for i := range 20 {
		dialFrom(t, fmt.Sprintf("127.0.0.%d", 1+i%4), b.ln.Address())
	}
	waitFor(t, 5*time.Second, func() error {
		if st := b.ln.Stats(); st.Open != 20 {
			return fmt.Errorf("%d open", st.Open)
		}
		return nil
	})
	if c := dialFrom(t, "127.0.0.9", b.ln.Address()); !mqttraw.ClosedWithin(c, time.Second) {
		t.Fatal("the 21st connection was not refused")
	}
	if st := b.ln.Stats(); st.RefusedTotal != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A first packet that is not a CONNECT, or announces more than the
// pre-CONNECT bound, ends the connection before the broker allocates it.
func TestFirstPacketBounded(t *testing.T) {
	b := startBroker(t, Limits{})
	before := heapInUse()
	for _, first := range [][]byte{
		{0x10, 0x80, 0x80, 0x80, 0x7f}, // CONNECT of 256 MiB
		{0x10, 0x81, 0x80, 0x04},       // CONNECT of 64 KiB + 1
		{0x30, 0x05, 'a', 'b', 'c', 'd', 'e'},
		{0x10, 0x80, 0x80, 0x80, 0x80, 0x01}, // a fifth length byte
	} {
		c := dialFrom(t, "127.0.0.1", b.ln.Address())
		c.Write(first)
		if !mqttraw.ClosedWithin(c, time.Second) {
			t.Fatalf("% x: connection kept", first)
		}
	}
	for range 8 {
		c := dialFrom(t, "127.0.0.1", b.ln.Address())
		c.Write([]byte{0x10, 0x80, 0x80, 0x80, 0x7f})
		mqttraw.ClosedWithin(c, time.Second)
	}
	if grown := int64(heapInUse()) - int64(before); grown > 32<<20 {
		t.Fatalf("heap grew by %d MiB", grown>>20)
	}
	if st := b.ln.Stats(); st.BadFirstPacket != 12 {
		t.Fatalf("stats %+v", st)
	}
}

// After CONNECT, a packet over max_packet_size ends the connection before
// its body is read, and is counted.
func TestPacketSizeAfterConnect(t *testing.T) {
	b := startBroker(t, Limits{MaxPacketSize: 1 << 20})
	before := heapInUse()
	for i := range 8 {
		c, ack := connect(t, b.ln.Address(), mqttraw.Session{ID: fmt.Sprint("big", i), User: "u", Clean: true})
		if ack.ReasonCode != 0 {
			t.Fatalf("connect: %#x", ack.ReasonCode)
		}
		c.Write([]byte{0x30, 0x80, 0x80, 0x80, 0x7f}) // PUBLISH of 256 MiB
		if !mqttraw.ClosedWithin(c, 2*time.Second) {
			t.Fatal("connection kept after an oversized packet")
		}
	}
	if grown := int64(heapInUse()) - int64(before); grown > 32<<20 {
		t.Fatalf("heap grew by %d MiB", grown>>20)
	}
	waitFor(t, 5*time.Second, func() error {
		if st := b.hook.Stats(); st.PacketsTooLarge != 8 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
}

// Accept errors (a process out of file descriptors) pause the loop, show
// in Err, and do not end it.
func TestAcceptErrorsDoNotEndTheListener(t *testing.T) {
	l2, err := NewListener(ListenerOptions{ID: "t2", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Its first five accepts fail, as they do when the process is out of
	// file descriptors.
	l2.ln = &failingListener{Listener: inner, fails: 5}
	served := make(chan string, 1)
	go l2.Serve(func(id string, c net.Conn) error { served <- id; c.Close(); return nil })
	t.Cleanup(func() { l2.Close(func(string) {}) })
	waitFor(t, 2*time.Second, func() error {
		if l2.Err() == nil {
			return errors.New("Err is nil while accepts fail")
		}
		return nil
	})
	c, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection served after the accept errors")
	}
	if st := l2.Stats(); st.AcceptErrors != 5 || l2.Err() != nil {
		t.Fatalf("stats %+v err %v", st, l2.Err())
	}
}

type failingListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (f *failingListener) Accept() (net.Conn, error) {
	f.mu.Lock()
	if f.fails > 0 {
		f.fails--
		f.mu.Unlock()
		return nil, errors.New("accept: too many open files")
	}
	f.mu.Unlock()
	return f.Listener.Accept()
}

// An account holds at most its cap of sessions, connected or kept; a
// client resuming its own session is not refused.
func TestSessionsPerAccount(t *testing.T) {
	b := startBroker(t, Limits{MaxSessionsPerAccount: 3})
	for i := range 3 {
		c, ack := connect(t, b.ln.Address(), mqttraw.Session{ID: fmt.Sprint("s", i), User: "reader", Clean: false})
		if ack.ReasonCode != 0 {
			t.Fatalf("session %d: %#x", i, ack.ReasonCode)
		}
		c.Close()
	}
	if _, ack := connect(t, b.ln.Address(), mqttraw.Session{ID: "s3", User: "reader", Clean: false}); ack.ReasonCode == 0 {
		t.Fatal("a fourth session of the account was accepted")
	}
	if _, ack := connect(t, b.ln.Address(), mqttraw.Session{ID: "s0", User: "reader", Clean: false}); ack.ReasonCode != 0 {
		t.Fatalf("resuming a kept session: %#x", ack.ReasonCode)
	}
	if _, ack := connect(t, b.ln.Address(), mqttraw.Session{ID: "o", User: "other", Clean: false}); ack.ReasonCode != 0 {
		t.Fatalf("another account: %#x", ack.ReasonCode)
	}
	if st := b.hook.Stats(); st.SessionsRefused != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A session asking to be kept forever is kept for max_session_expiry,
// and the CONNACK says so.
func TestSessionExpiryCapped(t *testing.T) {
	b := startBroker(t, Limits{MaxSessionExpiry: config.Duration(time.Hour)})
	_, ack := connect(t, b.ln.Address(), mqttraw.Session{ID: "v5", User: "u", Version: 5, Expiry: 0xffffffff})
	if ack.ReasonCode != 0 || !ack.Properties.SessionExpiryIntervalFlag || ack.Properties.SessionExpiryInterval != 3600 {
		t.Fatalf("CONNACK %#x expiry %v %d", ack.ReasonCode, ack.Properties.SessionExpiryIntervalFlag, ack.Properties.SessionExpiryInterval)
	}
}

// Read-only sessions that subscribe to everything at QoS 1 and leave,
// asking to be kept forever, hold a bounded share of the retained values.
func TestKeptSessionsBounded(t *testing.T) {
	b := startBroker(t, Limits{})
	payload := bytes.Repeat([]byte("x"), 200)
	for i := range 20000 {
		if err := b.srv.Publish(fmt.Sprintf("uns/t/%d", i), payload, true, 1); err != nil {
			t.Fatal(err)
		}
	}
	before := heapInUse()
	for i := range 15 {
		c, ack := connect(t, b.ln.Address(), mqttraw.Session{ID: fmt.Sprint("keep", i), User: "reader", Version: 5, Expiry: 0xffffffff, Subscribe: "#"})
		if ack.ReasonCode != 0 {
			t.Fatalf("connect: %#x", ack.ReasonCode)
		}
		time.Sleep(200 * time.Millisecond) // the retained values are queued for it
		c.Close()
	}
	grown := int64(heapInUse()) - int64(before)
	t.Logf("15 kept sessions: heap +%d MiB", grown>>20)
	if grown > 256<<20 {
		t.Fatalf("heap grew by %d MiB for 15 kept sessions", grown>>20)
	}
}

// Clients keep retained messages on at most max_retained topics; the
// broker's own are not counted; a replaced or cleared topic frees none or
// one; past the cap a message is delivered but not kept.
func TestRetainedCap(t *testing.T) {
	b := startBroker(t, Limits{MaxRetained: 3})
	for i := range 10 { // the broker's own
		b.srv.Publish(fmt.Sprintf("uns/own/%d", i), []byte("v"), true, 0)
	}
	c, ack := connect(t, b.ln.Address(), mqttraw.Session{ID: "pub", User: "dev", Clean: true})
	if ack.ReasonCode != 0 {
		t.Fatalf("connect: %#x", ack.ReasonCode)
	}
	for _, m := range [][2]string{{"a", "1"}, {"b", "1"}, {"c", "1"}, {"a", "2"}, {"d", "1"}, {"b", ""}, {"e", "1"}, {"f", "1"}} {
		mqttraw.Publish(t, c, "site/"+m[0], []byte(m[1]), true)
	}
	waitFor(t, 5*time.Second, func() error {
		if st := b.hook.Stats(); st.RetainRefused != 2 || st.Retained != 3 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	kept := map[string]string{}
	for _, pk := range b.srv.Topics.Retained.GetAll() {
		kept[pk.TopicName] = string(pk.Payload)
	}
	for topic, want := range map[string]string{"site/a": "2", "site/c": "1", "site/e": "1", "uns/own/9": "v"} {
		if kept[topic] != want {
			t.Errorf("retained %s = %q, want %q", topic, kept[topic], want)
		}
	}
	for _, topic := range []string{"site/b", "site/d", "site/f"} {
		if _, ok := kept[topic]; ok {
			t.Errorf("%s retained", topic)
		}
	}
}
