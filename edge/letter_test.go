package edge

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// Sparkplug 3.0 to the letter, as an independent checker reads the wire.
// The birth certificate is the first publish of a session (the config
// status follows it); when aliases are used, every birth metric has one;
// a payload's metrics are in time order even when sources keep their own
// timestamps; a template instance in DDATA names its template.
func TestSparkplugToTheLetter(t *testing.T) {
	for _, templates := range []bool{false, true} {
		t.Run(fmt.Sprint("templates=", templates), func(t *testing.T) {
			r := startBroker(t)
			r.state(true, uint64(time.Now().UnixMilli()))
			dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
			t0 := time.Now().Add(-time.Minute)
			// One read whose values carry their own times, out of order.
			dev.ch <- []Reading{{Tag: "temp", TS: t0.Add(2 * time.Second), Value: uns.Float(20)},
				{Tag: "setpoint", TS: t0, Value: uns.Float(1)}, {Tag: "state", TS: t0.Add(time.Second), Value: uns.String("run")}}
			e := startEdgeWith(t, context.Background(), Options{Broker: "tcp://" + r.addr, Group: "g", EdgeID: "e", PrimaryHost: "calx", DataDir: t.TempDir(),
				SparkplugTemplates: templates, Devices: []Device{{ID: "d1", Path: "ent/site/area/line/m1", Connector: dev}}, Logger: discardLogger()})
			waitBorn(t, e)
			dev.ch <- []Reading{{Tag: "temp", TS: t0.Add(5 * time.Second), Value: uns.Float(25)},
				{Tag: "setpoint", TS: t0.Add(3 * time.Second), Value: uns.Float(2)}}
			checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
				for _, m := range r.all() {
					if m.topic.Type == sparkplug.DDATA {
						return nil
					}
				}
				return errors.New("no DDATA")
			})
			order := r.order()
			if len(order) == 0 || order[0] != "spBv1.0/g/NBIRTH/e" {
				t.Errorf("first publish of the session: %v", order[:min(3, len(order))])
			}
			for _, m := range r.all() {
				metrics := m.p.GetMetrics()
				if tv := firstTemplate(metrics); tv != nil && !tv.GetIsDefinition() {
					if m.topic.Type == sparkplug.DDATA || m.topic.Type == sparkplug.DBIRTH {
						if tv.GetTemplateRef() == "" || tv.IsDefinition == nil {
							t.Errorf("%s: template instance without template_ref or is_definition", m.topic)
						}
					}
					metrics = tv.GetMetrics()
				}
				for i := 1; i < len(metrics); i++ {
					if metrics[i].GetTimestamp() < metrics[i-1].GetTimestamp() {
						t.Errorf("%s: metric %d at %d after one at %d", m.topic, i, metrics[i].GetTimestamp(), metrics[i-1].GetTimestamp())
					}
				}
				if m.topic.Type == sparkplug.NBIRTH {
					for _, pm := range m.p.GetMetrics() {
						if pm.Alias == nil {
							t.Errorf("NBIRTH metric %q has no alias", pm.GetName())
						}
					}
				}
			}
		})
	}
}

func firstTemplate(ms []*pb.Payload_Metric) *pb.Payload_Template {
	for _, m := range ms {
		if tv := m.GetTemplateValue(); tv != nil {
			return tv
		}
	}
	return nil
}

// Values buffered while a device was up go out after a reconnect with one
// DBIRTH and one DDEATH of the device when it is down by then, not a
// birth and a death around each buffered message.
func TestBacklogOfALostDeviceOneBirthOneDeath(t *testing.T) {
	r := startBroker(t)
	r.state(false, uint64(time.Now().UnixMilli())) // the host is away: values are buffered
	dev := &fakeDevice{ch: make(chan []Reading, 50), writes: make(chan string, 10)}
	e := startEdge(t, r, t.TempDir(), dev)
	now := time.Now()
	for i := range 20 {
		dev.ch <- []Reading{{Tag: "temp", TS: now.Add(time.Duration(i) * time.Second), Value: uns.Float(float64(20 + 2*i))}}
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if st := e.Stats(); st.Stored < 20 {
			return fmt.Errorf("%d stored", st.Stored)
		}
		return nil
	})
	dev.ch <- nil // the device goes before the host comes back
	time.Sleep(100 * time.Millisecond)
	r.state(true, uint64(time.Now().UnixMilli()))
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		var values int
		for _, m := range r.all() {
			if m.topic.Type == sparkplug.DDATA {
				values += len(m.p.GetMetrics())
			}
		}
		if values < 20 {
			return fmt.Errorf("%d values sent", values)
		}
		for _, m := range r.all() {
			if m.topic.Type == sparkplug.DDEATH {
				return nil
			}
		}
		return errors.New("no DDEATH")
	})
	var seq []string
	for _, m := range r.all() {
		if m.topic.Device == "d1" {
			seq = append(seq, string(m.topic.Type))
		}
	}
	got := strings.Join(seq, " ")
	if strings.Count(got, "DBIRTH") != 1 || strings.Count(got, "DDEATH") != 1 || !strings.HasPrefix(got, "DBIRTH DDATA") || !strings.HasSuffix(got, "DDATA DDEATH") {
		t.Fatalf("device messages: %s", got)
	}
}

// An edge node with no primary host (primary_host: none) births as soon
// as it is connected, with no STATE on the broker.
func TestNoPrimaryHost(t *testing.T) {
	f := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(f, []byte("cloud: {broker: 'tcp://127.0.0.1:1', username: u, password: p, group: g, edge_id: e, primary_host: none}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(f)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cloud.PrimaryHost != "" {
		t.Fatalf("primary_host none read as %q", cfg.Cloud.PrimaryHost)
	}
	r := startBroker(t) // no STATE on it
	dev := &fakeDevice{ch: make(chan []Reading, 10), writes: make(chan string, 10)}
	e := startEdgeWith(t, context.Background(), Options{Broker: "tcp://" + r.addr, Group: "g", EdgeID: "e", DataDir: t.TempDir(), Logger: discardLogger(),
		Devices: []Device{{ID: "d1", Path: "ent/site/area/line/m1", Connector: dev}}})
	waitBorn(t, e)
}

// The edge takes a broker address with any scheme users write, as the
// cloud and the bench do (config.BrokerURL).
func TestBrokerSchemes(t *testing.T) {
	o := Options{Broker: "mqtt://127.0.0.1:1883", Brokers: []string{"mqtts://backup:8883"}, Group: "g", EdgeID: "e", DataDir: t.TempDir()}
	if err := o.Validate(); err != nil {
		t.Fatal(err)
	}
	if o.Brokers[0] != "tcp://127.0.0.1:1883" || o.Brokers[1] != "ssl://backup:8883" {
		t.Fatalf("brokers %v", o.Brokers)
	}
	bad := Options{Broker: "http://127.0.0.1:1883", Group: "g", EdgeID: "e", DataDir: t.TempDir()}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "mqtt://") {
		t.Fatalf("http:// broker: %v", err)
	}
}
