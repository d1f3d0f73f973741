package mqttin

import (
	"fmt"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"

	"github.com/calx-iiot/calx/connector"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/uns"
)

// broker is a real embedded MQTT broker standing in for a device or a
// LoRaWAN network server.
func broker(t *testing.T) (*mqtt.Server, string) {
	t.Helper()
	srv := mqtt.New(&mqtt.Options{InlineClient: true})
	srv.AddHook(new(auth.AllowHook), nil)
	tcp := listeners.NewTCP(listeners.Config{ID: "t", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, "tcp://" + tcp.Address()
}

func start(t *testing.T, s Settings) *edgetest.Sink {
	t.Helper()
	src, err := New("dev", s, nil)
	if err != nil {
		t.Fatal(err)
	}
	return edgetest.Run(t, src)
}

// publishUntil publishes until the tag shows up, since the subscription is
// made in the background.
func publishUntil(t *testing.T, srv *mqtt.Server, sk *edgetest.Sink, topic, payload, tag string) connector.Reading {
	t.Helper()
	var r connector.Reading
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		srv.Publish(topic, []byte(payload), false, 0)
		var ok bool
		if r, ok = sk.Get(tag); !ok {
			return fmt.Errorf("no %s yet", tag)
		}
		return nil
	})
	return r
}

func TestPlainAndJSONPayloads(t *testing.T) {
	srv, url := broker(t)
	sk := start(t, Settings{Broker: url, Tags: []Tag{
		{Name: "temp", Topic: "plant/kiln1/temp"},
		{Name: "state", Topic: "plant/kiln1/state", Type: "string"},
		{Name: "flow", Topic: "plant/+/json", Path: "data.flow", TagOptions: connector.TagOptions{Unit: "m³/h"}},
	}})
	if r := publishUntil(t, srv, sk, "plant/kiln1/temp", " 1102.5 ", "temp"); !r.Value.Equal(uns.Float(1102.5)) {
		t.Errorf("temp = %+v", r.Value)
	}
	if r := publishUntil(t, srv, sk, "plant/kiln1/state", "running", "state"); !r.Value.Equal(uns.String("running")) {
		t.Errorf("state = %+v", r.Value)
	}
	if r := publishUntil(t, srv, sk, "plant/kiln7/json", `{"data":{"flow":"12.5"}}`, "flow"); !r.Value.Equal(uns.Float(12.5)) {
		t.Errorf("flow = %+v", r.Value)
	}
}

func TestChirpStackUplink(t *testing.T) {
	srv, url := broker(t)
	sk := start(t, Settings{Broker: url, Preset: PresetChirpStack, DevEUI: "0004A30B001C0530", Fields: []string{"temperature", "humidity"}})
	up := `{"deviceInfo":{"devEui":"0004a30b001c0530"},"time":"2026-11-24T10:00:00.5Z",
		"object":{"temperature":21.5,"humidity":40},"rxInfo":[{"rssi":-57,"snr":10.25}]}`
	r := publishUntil(t, srv, sk, "application/3f2a/device/0004a30b001c0530/event/up", up, "temperature")
	if !r.Value.Equal(uns.Float(21.5)) || !r.TS.Equal(time.Date(2026, 11, 24, 10, 0, 0, 500000000, time.UTC)) {
		t.Errorf("temperature = %+v at %s", r.Value, r.TS)
	}
	for tag, want := range map[string]uns.Value{"humidity": uns.Float(40), "rssi": uns.Float(-57), "snr": uns.Float(10.25)} {
		if r, _ := sk.Get(tag); !r.Value.Equal(want) {
			t.Errorf("%s = %+v, want %+v", tag, r.Value, want)
		}
	}
}

func TestThingsStackUplink(t *testing.T) {
	srv, url := broker(t)
	topic := "v3/kiln-sensors@ttn/devices/stack-probe-1/up"
	sk := start(t, Settings{Broker: url, Preset: PresetTTS, Topic: topic, Fields: []string{"co2"}})
	up := `{"end_device_ids":{"device_id":"stack-probe-1"},"uplink_message":{"decoded_payload":{"co2":812},
		"rx_metadata":[{"rssi":-101,"snr":-3.5}],"received_at":"2026-11-24T10:00:01Z"}}`
	if r := publishUntil(t, srv, sk, topic, up, "co2"); !r.Value.Equal(uns.Float(812)) {
		t.Errorf("co2 = %+v", r.Value)
	}
	if r, _ := sk.Get("rssi"); !r.Value.Equal(uns.Float(-101)) {
		t.Errorf("rssi = %+v", r.Value)
	}
}

// A lost broker makes the device lost; the source comes back by itself.
func TestBrokerLossAndRecovery(t *testing.T) {
	srv, url := broker(t)
	sk := start(t, Settings{Broker: url, Tags: []Tag{{Name: "v", Topic: "a/v"}}})
	publishUntil(t, srv, sk, "a/v", "1", "v")
	for _, cl := range srv.Clients.GetAll() {
		if !cl.Net.Inline {
			cl.Stop(fmt.Errorf("test cuts the link"))
		}
	}
	edgetest.CheckFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if sk.Losses() == 0 {
			return fmt.Errorf("not reported lost")
		}
		return nil
	})
	// A reconnect that the broker does not answer is given up after the
	// connect timeout (10 s) and tried again.
	edgetest.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		srv.Publish("a/v", []byte("2"), false, 0)
		if r, _ := sk.Get("v"); !r.Value.Equal(uns.Float(2)) {
			return fmt.Errorf("v = %+v", r.Value)
		}
		return nil
	})
}

func TestSettingsErrors(t *testing.T) {
	for name, s := range map[string]Settings{
		"broker":        {Broker: "http://x", Tags: []Tag{{Name: "a", Topic: "a"}}},
		"no tags":       {Broker: "tcp://x:1"},
		"preset":        {Broker: "tcp://x:1", Preset: "lorix"},
		"no fields":     {Broker: "tcp://x:1", Preset: PresetChirpStack, DevEUI: "01"},
		"ttn no topic":  {Broker: "tcp://x:1", Preset: PresetTTS, Fields: []string{"a"}},
		"bad path":      {Broker: "tcp://x:1", Tags: []Tag{{Name: "a", Topic: "a", Path: "x[y]"}}},
		"bad wildcard":  {Broker: "tcp://x:1", Tags: []Tag{{Name: "a", Topic: "a/#/b"}}},
		"duplicate tag": {Broker: "tcp://x:1", Tags: []Tag{{Name: "a", Topic: "a"}, {Name: "a", Topic: "b"}}},
		"level 2 of 1":  {Broker: "tcp://x:1", Tags: []Tag{{Name: "{2}/t", Topic: "a/+/t"}}},
		"{#} without #": {Broker: "tcp://x:1", Tags: []Tag{{Name: "{#}", Topic: "a/+"}}},
		"bad pattern":   {Broker: "tcp://x:1", Tags: []Tag{{Name: "{1}//t", Topic: "a/+"}}},
	} {
		if _, err := New("d", s, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSampleConfig(t *testing.T) {
	edgetest.SampleConfig(t, "sample.yaml", func(s Settings) error {
		_, err := New("sample", s, nil)
		return err
	})
}

// Wildcards of a topic name tags: each new name becomes a tag of the
// device, declared to the edge before its first value.
func TestWildcardsNameTags(t *testing.T) {
	srv, url := broker(t)
	sk := start(t, Settings{Broker: url, Tags: []Tag{
		{Name: "{1}/{2}", Topic: "sensors/+/+", TagOptions: connector.TagOptions{Unit: "°C", Scale: 0.5}},
		{Name: "lines/{#}", Topic: "mes/#", Path: "count", Type: "int64"},
	}})
	if r := publishUntil(t, srv, sk, "sensors/dryer/temp", "163", "dryer/temp"); !r.Value.Equal(uns.Float(81.5)) {
		t.Errorf("dryer/temp = %+v", r.Value)
	}
	publishUntil(t, srv, sk, "sensors/mill/temp", "40", "mill/temp")
	if r := publishUntil(t, srv, sk, "mes/line1/packer", `{"count":1200}`, "lines/line1/packer"); !r.Value.Equal(uns.Int(1200)) {
		t.Errorf("lines/line1/packer = %+v", r.Value)
	}
	publishUntil(t, srv, sk, "sensors/dryer/temp", "82", "dryer/temp")
	var names []string
	for _, d := range sk.Declared() {
		names = append(names, d.Name+" "+d.Unit)
	}
	if fmt.Sprint(names) != "[dryer/temp °C mill/temp °C lines/line1/packer ]" {
		t.Errorf("declared %q", names)
	}
	// A topic whose levels make no UNS path names no tag.
	srv.Publish("sensors//temp", []byte("1"), false, 0) // an empty level
	time.Sleep(100 * time.Millisecond)
	if len(sk.Declared()) != 3 {
		t.Errorf("declared %d tags", len(sk.Declared()))
	}
}
