package mqttin

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/uns/sparkplug"
)

// births records the metric names of every DBIRTH a broker sees.
type births struct {
	mu    sync.Mutex
	names [][]string
}

func (b *births) last() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.names) == 0 {
		return nil
	}
	return b.names[len(b.names)-1]
}

// An edge whose MQTT-in device names no broker reads the edge's own
// broker (with an account of its own there), where a site device publishes
// with its account; wildcard tags join the device's
// birth as they appear, and are still there after a restart.
func TestEdgeOwnBrokerAndDeclaredTags(t *testing.T) {
	cloud, url := broker(t)
	b := &births{}
	err := cloud.Subscribe("spBv1.0/g/DBIRTH/e/+", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		p, err := sparkplug.Decode(pk.Payload)
		if err != nil {
			t.Errorf("DBIRTH: %v", err)
			return
		}
		var names []string
		for _, m := range p.GetMetrics() {
			names = append(names, m.GetName())
		}
		b.mu.Lock()
		b.names = append(b.names, names)
		b.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	cloud.Publish("spBv1.0/STATE/calx", fmt.Appendf(nil, `{"online":true,"timestamp":%d}`, time.Now().UnixMilli()), true, 1)

	dir := t.TempDir()
	h, _ := bcrypt.GenerateFromPassword([]byte("plc-pw"), bcrypt.MinCost)
	plcHash := string(h)
	run := func() *edge.Edge {
		src, err := New("sensors", Settings{Tags: []Tag{{Name: "{1}/temp", Topic: "site/+/temp"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		e, err := edge.New(edge.Options{Broker: url, Group: "g", EdgeID: "e", PrimaryHost: "calx", DataDir: dir,
			LocalMQTT: "127.0.0.1:0", LocalUsers: []edge.LocalUser{{Username: "plc", PasswordHash: plcHash, Role: edge.LocalDevice}},
			Devices: []edge.Device{{ID: "sensors", Path: "ent/site/area/line/sensors", Connector: src}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := run()
	// The site device publishes to the edge's broker.
	dev := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + e.LocalMQTTAddr()).SetClientID("dryer-plc").SetUsername("plc").SetPassword("plc-pw"))
	if tok := dev.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect to the edge's broker: %v", tok.Error())
	}
	defer dev.Disconnect(10)
	edgetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		dev.Publish("site/dryer/temp", 0, false, "81.5").WaitTimeout(time.Second)
		if !slices.Contains(b.last(), "dryer/temp") {
			return fmt.Errorf("DBIRTHs %v", b.names)
		}
		return nil
	})
	edgetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if st := e.Stats(); st.Sent == 0 {
			return fmt.Errorf("nothing sent: %+v", st)
		}
		return nil
	})
	e.Shutdown(context.Background())

	// After a restart the tag is part of the first birth.
	n := len(b.names)
	e = run()
	t.Cleanup(func() { e.Shutdown(context.Background()) })
	edgetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		if len(b.names) == n {
			return fmt.Errorf("no DBIRTH after the restart")
		}
		if !slices.Contains(b.names[n], "dryer/temp") {
			return fmt.Errorf("first DBIRTH after the restart: %v", b.names[n])
		}
		return nil
	})
}
