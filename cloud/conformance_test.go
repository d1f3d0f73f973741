package cloud

import (
	"context"
	"errors"
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/internal/mosquitto"
	"github.com/calx-iiot/calx/interop/conformance"
	"github.com/calx-iiot/calx/uns"
)

var update = flag.Bool("update", false, "rewrite the conformance tables of docs/SPARKPLUG.md")

const sparkplugDoc = "../docs/SPARKPLUG.md"

// TestSparkplugConformance runs Calx edges and the Calx host through a
// session (births, data from sources with their own timestamps, a write,
// a rebirth request, a clean edge stop, the host going offline) on the
// embedded broker and on Mosquitto, with an independent checker watching
// every Sparkplug message; a MUST it finds broken fails the test, and its
// results per assertion are the tables of docs/SPARKPLUG.md (go test
// ./cloud -run TestSparkplugConformance -update rewrites them).
func TestSparkplugConformance(t *testing.T) {
	for _, broker := range []string{"embedded", "mosquitto"} {
		t.Run(broker, func(t *testing.T) {
			var c *Cloud
			var url, obsUser, obsPass string
			users := []MQTTUser{
				{Username: "e1", PasswordHash: mustHash(t, "pw1"), Role: RoleEdge, Group: "g", EdgeID: "e1"},
				{Username: "e2", PasswordHash: mustHash(t, "pw2"), Role: RoleEdge, Group: "g", EdgeID: "e2"},
				{Username: "reader", PasswordHash: mustHash(t, "pwr"), Role: RoleReader},
			}
			if broker == "mosquitto" {
				mosq := mosquitto.Start(t)
				c = startCloudWith(t, Options{MQTT: BrokerOptions{Users: users}, Uplink: &UplinkOptions{URL: mosq.URL()}})
				url = mosq.URL()
			} else {
				c = startCloudWith(t, Options{MQTT: BrokerOptions{Users: users}})
				url, obsUser, obsPass = "tcp://"+c.Broker.Addr(), "reader", "pwr"
			}
			checkFor(t, 15*time.Second, 20*time.Millisecond, func() error { return c.ReadyErr() })
			checker := conformance.New()
			obs := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("observer").SetUsername(obsUser).SetPassword(obsPass).SetAutoReconnect(false))
			if tok := obs.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			t.Cleanup(func() { obs.Disconnect(10) })
			obs.Subscribe("spBv1.0/#", 1, func(_ paho.Client, m paho.Message) {
				if m.Retained() {
					checker.ObserveRetained(m.Topic(), true)
				}
				checker.Observe(m.Topic(), m.Payload(), m.Retained())
			}).WaitTimeout(5 * time.Second)

			startEdge := func(id, pw string, templates bool) *edge.Edge {
				kiln, err := sim.New(id+"-kiln", sim.Settings{Interval: 100 * time.Millisecond, CycleTime: time.Minute, MeanTimeBetweenTrips: time.Hour, StartHot: true})
				if err != nil {
					t.Fatal(err)
				}
				clock, err := sim.NewClock(id+"-clock", sim.ClockSettings{Period: 50 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				e, err := edge.New(edge.Options{Broker: url, Username: id, Password: pw, Group: "g", EdgeID: id, PrimaryHost: "calx", DataDir: t.TempDir(),
					SparkplugTemplates: templates, Devices: []edge.Device{{ID: "kiln", Path: uns.Path("ent/" + id + "/a/l/kiln"), Connector: kiln, Template: "lime-kiln"},
						{ID: "clock", Path: uns.Path("ent/" + id + "/a/l/clock"), Connector: clock}}})
				if err != nil {
					t.Fatal(err)
				}
				if err := e.Start(context.Background()); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { e.Shutdown(context.Background()) })
				return e
			}
			e1, e2 := startEdge("e1", "pw1", false), startEdge("e2", "pw2", true)
			setpoint := uns.Path("ent/e1/a/l/kiln/production_setpoint")
			checkFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				if !e1.Online() || !e2.Online() {
					return errors.New("edges not born")
				}
				if tag, ok := c.Registry.Get(setpoint); !ok || !tag.Writable {
					return errors.New("setpoint not born")
				}
				return nil
			})
			time.Sleep(time.Second)
			if err := c.Host.Write(setpoint, uns.Float(12.5)); err != nil {
				t.Fatal(err)
			}
			if err := c.Host.RequestRebirth("g", "e1"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if err := e1.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(500 * time.Millisecond)
			if err := c.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(300 * time.Millisecond)
			results := checker.Results()
			for _, r := range results {
				if r.Verdict() == "FAIL" {
					t.Errorf("%s (%s): %d of %d broken, first: %s", r.ID, r.Level, r.Failed, r.Checked, r.Example)
				}
			}
			table := conformance.Table(results)
			t.Logf("\n%s", table)
			compareDoc(t, broker, table, results)
		})
	}
}

// compareDoc holds the doc's table of a broker to the results: the same
// verdict for every assertion (counts differ from run to run); with
// -update, it writes the table.
func compareDoc(t *testing.T, broker, table string, results []conformance.Result) {
	t.Helper()
	doc, err := os.ReadFile(sparkplugDoc)
	if err != nil {
		t.Fatal(err)
	}
	begin, end := "<!-- conformance:"+broker+":begin -->\n", "<!-- conformance:"+broker+":end -->"
	i, j := strings.Index(string(doc), begin), strings.Index(string(doc), end)
	if i < 0 || j < i {
		t.Fatalf("%s has no %s section", sparkplugDoc, broker)
	}
	if *update {
		out := string(doc[:i+len(begin)]) + table + string(doc[j:])
		if err := os.WriteFile(sparkplugDoc, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	published := map[string]string{}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9-]+)` \\| \\w+ \\| ([a-zA-Z ]+) \\|")
	for _, m := range row.FindAllStringSubmatch(string(doc[i:j]), -1) {
		published[m[1]] = m[2]
	}
	for _, r := range results {
		if got, want := r.Verdict(), published[r.ID]; got != want {
			t.Errorf("%s: %s now, %q in %s (rerun with -update if the change is right)", r.ID, got, want, sparkplugDoc)
		}
	}
}
