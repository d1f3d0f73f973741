package cloud

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// TestScopedReader: an MQTT reader scoped to limeworks/ghent subscribes to
// Ghent's uns/ topics and to nothing else: not another site, not all of
// uns/, not Sparkplug, not $SYS; and it receives Ghent's values.
func TestScopedReader(t *testing.T) {
	c := startCloudWith(t, Options{MQTT: BrokerOptions{Users: []MQTTUser{
		{Username: "ghent-hmi", PasswordHash: mustHash(t, "pw-ghent"), Role: RoleReader, Scope: []string{"limeworks/ghent"}},
		{Username: "reader", PasswordHash: mustHash(t, "pw-all"), Role: RoleReader},
	}}})
	cl, err := dial(t, c, "ghent-hmi", "pw-ghent")
	if err != nil {
		t.Fatal(err)
	}
	all, err := dial(t, c, "reader", "pw-all")
	if err != nil {
		t.Fatal(err)
	}
	for filter, ok := range map[string]bool{
		"uns/limeworks/ghent/#": true, "uns/limeworks/ghent/kilns/+/kiln1/o2": true, "uns/limeworks/ghent": true,
		"uns/limeworks/namur/#": false, "uns/limeworks/#": false, "uns/#": false, "uns/+/ghent/#": false, "#": false,
		"$SYS/#": false, "spBv1.0/#": false, "spBv1.0/STATE/calx": false, "uns/limeworks/ghent2/#": false,
	} {
		for who, cli := range map[string]paho.Client{"scoped": cl, "unscoped": all} {
			if who == "unscoped" && filter == "$SYS/#" {
				continue // the broker's own rules, not a scope's
			}
			tok := cli.Subscribe(filter, 0, nil)
			tok.WaitTimeout(5 * time.Second)
			granted := tok.(*paho.SubscribeToken).Result()[filter] < 0x80
			if want := ok || who == "unscoped"; granted != want {
				t.Errorf("%s reader subscribes %s: granted=%v, want %v", who, filter, granted, want)
			}
		}
	}
	got := make(chan string, 10)
	cl.Subscribe("uns/limeworks/ghent/#", 0, func(_ paho.Client, m paho.Message) { got <- m.Topic() })
	for _, topic := range []string{"uns/limeworks/namur/a/b/c/t", "uns/limeworks/ghent/a/b/c/t"} {
		if err := c.Broker.Publish(topic, []byte(`{"value":1}`), false, 0); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case topic := <-got:
		if topic != "uns/limeworks/ghent/a/b/c/t" {
			t.Fatalf("the Ghent reader got %s", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the Ghent reader got nothing")
	}
	if err := (MQTTUser{Username: "r", PasswordHash: mustHash(t, "x"), Role: RoleReader, Scope: []string{"limeworks/#"}}).Validate(); err == nil {
		t.Error("a reader scope with a wildcard is valid")
	}
}
