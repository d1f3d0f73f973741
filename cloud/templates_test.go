package cloud

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// An edge in Sparkplug template mode: the machine type's definition in
// NBIRTH, the device as one instance in DBIRTH, data as instance members;
// the host stores the values under the same UNS paths, and a write reaches
// the device through the instance.
func TestEdgeTemplateMode(t *testing.T) {
	c := startCloud(t)
	var mu sync.Mutex
	births := map[sparkplug.MsgType]*pb.Payload{}
	record := func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		tp, err := sparkplug.ParseTopic(pk.TopicName)
		if err != nil {
			return
		}
		p, err := sparkplug.Decode(pk.Payload)
		if err != nil {
			t.Errorf("%s: %v", pk.TopicName, err)
			return
		}
		mu.Lock()
		if _, seen := births[tp.Type]; !seen {
			births[tp.Type] = p
		}
		mu.Unlock()
	}
	for i, filter := range []string{"spBv1.0/g/+/e1", "spBv1.0/g/+/e1/+"} {
		if err := c.Broker.srv.Subscribe(filter, 10+i, record); err != nil {
			t.Fatal(err)
		}
	}
	kiln, _ := sim.New("kiln1", sim.Settings{Interval: 20 * time.Millisecond, StartHot: true})
	edgetest.Start(t, edge.Options{Broker: "tcp://" + c.Broker.Addr(), Username: "e1", Password: "pw1", Group: "g", EdgeID: "e1",
		PrimaryHost: "calx", DataDir: t.TempDir(), SparkplugTemplates: true,
		Devices: []edge.Device{{ID: "kiln1", Path: "ent/site/kilns/line1/kiln1", Connector: kiln, Template: "lime-kiln"}}})
	life := uns.Path("ent/site/kilns/line1/kiln1/" + sim.TagLife)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n, _ := c.Historian.Count(context.Background(), life); n < 20 {
			return fmt.Errorf("%d life counter values stored", n)
		}
		return nil
	})
	mu.Lock()
	nb, db, dd := births[sparkplug.NBIRTH], births[sparkplug.DBIRTH], births[sparkplug.DDATA]
	mu.Unlock()
	var def *pb.Payload_Metric
	for _, m := range nb.GetMetrics() {
		if m.GetName() == "lime-kiln" {
			def = m
		}
	}
	if def == nil || pb.DataType(def.GetDatatype()) != pb.DataType_Template || !def.GetTemplateValue().GetIsDefinition() || len(def.GetTemplateValue().GetMetrics()) < 10 {
		t.Fatalf("NBIRTH has no template definition lime-kiln: %v", def)
	}
	if len(db.GetMetrics()) != 1 || db.GetMetrics()[0].GetTemplateValue().GetTemplateRef() != "lime-kiln" {
		t.Fatalf("DBIRTH is not one lime-kiln instance: %v", db.GetMetrics())
	}
	if len(dd.GetMetrics()) != 1 || dd.GetMetrics()[0].Alias == nil || dd.GetMetrics()[0].GetTemplateValue() == nil {
		t.Fatalf("DDATA is not one instance by alias: %v", dd.GetMetrics())
	}
	tag, ok := c.Registry.Get(life)
	if !ok || tag.Tag.Sparkplug.Metric != "lime-kiln/"+sim.TagLife {
		t.Fatalf("registry: %+v", tag)
	}
	sp := uns.Path("ent/site/kilns/line1/kiln1/" + sim.TagSetpoint)
	if err := c.Host.Write(sp, uns.Float(21.5)); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if ts, _ := c.Registry.Get(sp); !ts.Value.Equal(uns.Float(21.5)) {
			return fmt.Errorf("setpoint %v", ts.Value)
		}
		return nil
	})
}
