package cloud

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/transform"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// A calculated tag of the fleet config follows its inputs into the
// namespace and the history; a bad input makes it bad.
func TestCalculatedTags(t *testing.T) {
	c := startCloud(t)
	ctx := context.Background()
	cfg := `templates:
  - name: kiln
    connector: signals
    settings: {interval: 1s, signals: [{name: power_kw, kind: counter}]}
    calculated:
      - {name: specific_energy, expr: "power_kw * 1000 / max(production_tph, 0.1)", unit: kWh/t}
    alarms:
      - {name: energy_high, tag: specific_energy, kind: high, limit: 28000, priority: high}
edges:
  - group: g
    edge_id: e1
    devices: [{id: kiln1, path: g/e1/kiln1, template: kiln}]
`
	if _, err := c.Fleet.Save(ctx, []byte(cfg), "test", "calc"); err != nil {
		t.Fatal(err)
	}
	bad := `templates: [{name: k, connector: signals, settings: {interval: 1s, signals: [{name: a, kind: counter}]}, calculated: [{name: x, expr: "a +* 2"}]}]`
	if _, err := c.Fleet.Save(ctx, []byte(bad), "test", "bad"); err == nil {
		t.Fatal("a calculated tag that does not compile was accepted")
	}
	out := uns.Path("g/e1/kiln1/specific_energy")
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, ok := c.Registry.Get(out); !ok {
			return fmt.Errorf("calculated tag not in the namespace")
		}
		return nil
	})
	cl, err := dial(t, c, "e1", "pw1")
	if err != nil {
		t.Fatal(err)
	}
	f := &foreign{t: t, cl: cl}
	ts := uint64(time.Now().UnixMilli())
	f.send(sparkplug.NBIRTH, "", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(0), ts),
		metric("Node Control/Rebirth", 0, pb.DataType_Boolean, uns.Bool(false), ts),
	}})
	f.send(sparkplug.DBIRTH, "kiln1", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric("power_kw", 1, pb.DataType_Double, uns.Float(500), ts),
		metric("production_tph", 2, pb.DataType_Double, uns.Float(20), ts),
	}})
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if st, _ := c.Registry.Get(out); !st.Value.Equal(uns.Float(25000)) || st.Quality != uns.Good {
			return fmt.Errorf("specific energy %+v %v", st.Value, st.Quality)
		}
		return nil
	})
	f.send(sparkplug.DDATA, "kiln1", &pb.Payload{Timestamp: proto.Uint64(ts + 1000), Metrics: []*pb.Payload_Metric{
		metric("", 1, pb.DataType_Double, uns.Float(600), ts+1000),
	}})
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if st, _ := c.Registry.Get(out); !st.Value.Equal(uns.Float(30000)) {
			return fmt.Errorf("specific energy %+v", st.Value)
		}
		if n, _ := c.Historian.Count(ctx, out); n < 2 {
			return fmt.Errorf("%d calculated values stored", n)
		}
		return nil
	})
	// The alarm on the calculated tag raised, and its state is retained on MQTT.
	reader, err := dial(t, c, "reader", "pwr")
	if err != nil {
		t.Fatal(err)
	}
	alarms := make(chan string, 4)
	reader.Subscribe("uns/g/e1/kiln1/_alarms/#", 1, func(_ paho.Client, m paho.Message) {
		alarms <- fmt.Sprintf("%s retained=%v %s", m.Topic(), m.Retained(), m.Payload())
	}).WaitTimeout(5 * time.Second)
	select {
	case m := <-alarms:
		if !strings.HasPrefix(m, "uns/g/e1/kiln1/_alarms/energy_high retained=true ") || !strings.Contains(m, `"state":"active_unacked"`) || !strings.Contains(m, `"value":30000`) {
			t.Fatalf("alarm message %s", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no alarm on MQTT")
	}
	if st, _ := c.Alarms(ctx); len(st) != 1 || st[0].State != transform.StateUnacked {
		t.Fatalf("alarms %+v", st)
	}
	nullProd := &pb.Payload_Metric{Alias: proto.Uint64(2), Timestamp: proto.Uint64(ts + 2000), IsNull: proto.Bool(true)}
	f.send(sparkplug.DDATA, "kiln1", &pb.Payload{Timestamp: proto.Uint64(ts + 2000), Metrics: []*pb.Payload_Metric{nullProd}})
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if st, _ := c.Registry.Get(out); st.Quality != uns.Bad || !strings.Contains(st.Reason, "production_tph") {
			return fmt.Errorf("specific energy %v (%q) with a null input", st.Quality, st.Reason)
		}
		return nil
	})
}
