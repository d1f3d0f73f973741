package edge_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/edgetest"
	"github.com/calx-iiot/calx/edge/sim"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/web/webtest"
)

// cloudStarter returns a function that starts a cloud on dir, for one edge
// "e" of group "g" with password "edge-pw", listening for MQTT on listen;
// called again with the first one's address, it restarts on the same port.
func cloudStarter(t *testing.T, dir string) func(listen string) *webtest.App {
	t.Helper()
	hash, err := cloud.HashPassword("edge-pw")
	if err != nil {
		t.Fatal(err)
	}
	return func(listen string) *webtest.App {
		t.Helper()
		return webtest.Start(t, cloud.Options{DataDir: filepath.Join(dir, "cloud"),
			MQTT: cloud.BrokerOptions{Listen: listen, Users: []cloud.MQTTUser{{Username: "e", PasswordHash: hash, Role: cloud.RoleEdge, Group: "g", EdgeID: "e"}}}})
	}
}

// TestOutageLosesNothing stops the cloud while an edge keeps reading, starts
// it again on the same data dir and port, and checks that every value of
// the life counter arrives once, in order: the backlog as historical data,
// the buffer trimmed by receipts afterwards.
func TestOutageLosesNothing(t *testing.T) {
	dir := t.TempDir()
	startCloud := cloudStarter(t, dir)
	app := startCloud("127.0.0.1:0")
	addr := app.Cloud.Broker.Addr()

	kiln, _ := sim.New("k", sim.Settings{Interval: 10 * time.Millisecond, StartHot: true})
	e := edgetest.Start(t, edge.Options{Broker: "tcp://" + addr, Username: "e", Password: "edge-pw", Group: "g", EdgeID: "e",
		PrimaryHost: "calx", DataDir: filepath.Join(dir, "edge"), KeepAlive: 5 * time.Second,
		Devices: []edge.Device{{ID: "kiln", Path: "ent/site/area/line/kiln", Connector: kiln}}})
	life := uns.Path("ent/site/area/line/kiln/" + sim.TagLife)
	count := func(a *webtest.App) int64 {
		n, _ := a.Cloud.Historian.Count(context.Background(), life)
		return n
	}
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := count(app); n < 50 {
			return fmt.Errorf("%d values", n)
		}
		return nil
	})
	// Receipts keep the buffer short while the cloud is there.
	edgetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if st := e.Stats(); st.BufferedMsgs > 20 {
			return fmt.Errorf("%d messages still buffered", st.BufferedMsgs)
		}
		return nil
	})

	// The cloud goes away for a while; the edge keeps reading into its buffer.
	if err := app.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	outage := time.Now()
	edgetest.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if st := e.Stats(); st.BufferedMsgs < 200 {
			return fmt.Errorf("%d messages buffered", st.BufferedMsgs)
		}
		return nil
	})
	app = startCloud(addr)
	t.Logf("outage of %s", time.Since(outage).Round(time.Millisecond))

	// Everything read so far arrives: the counter has no hole and no duplicate.
	var last int64
	edgetest.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		pts, err := app.Cloud.Historian.History(context.Background(), life, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), 0)
		if err != nil {
			return err
		}
		// Deaths leave a bad-quality point without a value; skip those.
		var vals []int64
		var at []time.Time
		for _, p := range pts {
			if p.Value.Kind != uns.KindNull {
				vals = append(vals, p.Value.I)
				at = append(at, p.TS)
			}
		}
		for i, v := range vals {
			if v != int64(i+1) {
				var before time.Time
				if i > 0 {
					before = at[i-1]
				}
				return fmt.Errorf("value %d is %d, stored at %s, the one before at %s (host %+v, edge %+v, broker %+v)", i+1, v,
					at[i].Format("15:04:05.000000"), before.Format("15:04:05.000000"), app.Cloud.Host.Stats(), e.Stats(), app.Cloud.Broker.Stats())
			}
		}
		last = int64(len(vals))
		st := e.Stats()
		if st.Read/13 > uint64(last)+20 {
			return fmt.Errorf("%d values stored, about %d read", last, st.Read/13)
		}
		if st.BufferedMsgs > 20 {
			return fmt.Errorf("%d messages still buffered", st.BufferedMsgs)
		}
		return nil
	})
	if st := e.Stats(); st.Dropped != 0 {
		t.Fatalf("edge dropped %d values", st.Dropped)
	}
	t.Logf("%d consecutive counter values stored", last)
}

// TestDrainRateCap: with drain_rate set, a backlog goes out no faster than
// the cap, and still completely.
func TestDrainRateCap(t *testing.T) {
	dir := t.TempDir()
	startCloud := cloudStarter(t, dir)
	app := startCloud("127.0.0.1:0")
	addr := app.Cloud.Broker.Addr()
	clock, _ := sim.NewClock("c", sim.ClockSettings{FastRate: 1000, Interval: 10 * time.Millisecond})
	const rate = 500
	e := edgetest.Start(t, edge.Options{Broker: "tcp://" + addr, Username: "e", Password: "edge-pw", Group: "g", EdgeID: "e",
		PrimaryHost: "calx", DataDir: filepath.Join(dir, "edge"), DrainRate: rate,
		Devices: []edge.Device{{ID: "clock", Path: "ent/site/area/line/clock", Connector: clock}}})
	fast := uns.Path("ent/site/area/line/clock/" + sim.TagFast)
	edgetest.CheckFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !e.Online() {
			return fmt.Errorf("edge not online")
		}
		return nil
	})
	app.Shutdown(context.Background())
	time.Sleep(2 * time.Second) // about 2,000 fast values buffered
	app = startCloud(addr)
	back := time.Now()
	// The backlog is complete when the values are consecutive up to one
	// read before the restart.
	end := clock.FastAt(back.Add(-50 * time.Millisecond))
	var first int64
	edgetest.CheckFor(t, 60*time.Second, 100*time.Millisecond, func() error {
		pts, err := app.Cloud.Historian.History(context.Background(), fast, back.Add(-time.Hour), back.Add(time.Hour), 0)
		if err != nil || len(pts) == 0 {
			return fmt.Errorf("no history: %v", err)
		}
		first = pts[0].Value.I
		seen := map[int64]bool{}
		for _, p := range pts {
			seen[p.Value.I] = true
		}
		for v := first; v <= end; v++ {
			if !seen[v] {
				return fmt.Errorf("value %d missing", v)
			}
		}
		return nil
	})
	took := time.Since(back)
	backlog := float64(end - first)
	if backlog < 1000 {
		t.Fatalf("backlog of only %.0f values", backlog)
	}
	// The fast tag is not the only backlog (the counter too), so the cap
	// bounds the drain from below: values/rate seconds at the least.
	if min := time.Duration(backlog/rate*0.8) * time.Second; took < min {
		t.Fatalf("%.0f values drained in %s, faster than the cap of %d/s allows (%s)", backlog, took, rate, min)
	}
	t.Logf("%.0f values drained in %s at a cap of %d values/s", backlog, took.Round(time.Millisecond), rate)
}
