package cloud

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/calx-iiot/calx/connector/all" // registers every connector
	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/store/historian"
	"github.com/calx-iiot/calx/uns"
)

// fleetYAML is a fleet of n edges in two sites, each with one device of
// the template "box"; extra is laid into the template's signals.
func fleetYAML(n int, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `templates:
  - name: box
    connector: signals
    params: {interval: 1s}
    settings:
      interval: ${interval}
      signals:
        - {name: count, kind: counter, step: 1}
%s
edges:
`, extra)
	for i := range n {
		site := "north"
		if i >= n/2 {
			site = "south"
		}
		fmt.Fprintf(&b, `  - group: g
    edge_id: e%02d
    site: %s
    devices:
      - {id: box1, path: ent/%s/area/line/e%02d-box1, template: box}
`, i, site, site, i)
	}
	return b.String()
}

// TestFleetRollout runs 50 edges against one cloud: a template change rolled
// out to all of them converges within 10 s; an edge that was offline
// converges when it comes back; a config the edges cannot run is refused by
// every edge, which keeps running its previous version.
func TestFleetRollout(t *testing.T) {
	const n = 50
	hash := mustHash(t, "fleet-pw")
	var users []MQTTUser
	for i := range n {
		users = append(users, MQTTUser{Username: fmt.Sprintf("e%02d", i), PasswordHash: hash, Role: RoleEdge, Group: "g", EdgeID: fmt.Sprintf("e%02d", i)})
	}
	c := startCloudWith(t, Options{MQTT: BrokerOptions{Users: users}})
	ctx := context.Background()

	edges := make([]*edge.Edge, n)
	start := func(i int) {
		e, err := edge.New(edge.Options{Broker: "tcp://" + c.Broker.Addr(), Username: fmt.Sprintf("e%02d", i), Password: "fleet-pw",
			Group: "g", EdgeID: fmt.Sprintf("e%02d", i), PrimaryHost: "calx", DataDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(ctx); err != nil {
			t.Fatal(err)
		}
		edges[i] = e
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, e := range edges {
			if e != nil {
				wg.Go(func() { e.Shutdown(context.Background()) })
			}
		}
		wg.Wait()
	})
	offline := n - 1 // this one is off while the first versions roll out
	for i := range n {
		if i != offline {
			start(i)
		}
	}
	converged := func(version uint64, state string, edgesIn []int, within time.Duration) time.Duration {
		t.Helper()
		began := time.Now()
		checkFor(t, within, 50*time.Millisecond, func() error {
			states, err := c.Fleet.States(ctx)
			if err != nil {
				return err
			}
			byEdge := map[string]EdgeConfigState{}
			for _, s := range states {
				byEdge[s.Edge] = s
			}
			for _, i := range edgesIn {
				s := byEdge[fmt.Sprintf("g/e%02d", i)]
				if s.Desired != version || s.State != state {
					return fmt.Errorf("edge e%02d: %+v, want version %d %s", i, s, version, state)
				}
			}
			return nil
		})
		return time.Since(began)
	}
	online := make([]int, 0, n)
	for i := range n {
		if i != offline {
			online = append(online, i)
		}
	}

	v1, err := c.Fleet.Save(ctx, []byte(fleetYAML(n, "")), "test", "first")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Fleet.Roll(ctx, Rollout{Version: v1.Version, All: true}); err != nil {
		t.Fatal(err)
	}
	converged(v1.Version, "in-sync", online, 30*time.Second)

	// The template changes: a second signal. Rolled out by template.
	v2, err := c.Fleet.Save(ctx, []byte(fleetYAML(n, "        - {name: level, kind: ramp, low: 0, high: 100, period: 1m}")), "test", "level added")
	if err != nil {
		t.Fatal(err)
	}
	if _, rolled, err := c.Fleet.Roll(ctx, Rollout{Version: v2.Version, Template: "box"}); err != nil || len(rolled) != n {
		t.Fatalf("rollout to %d edges: %v", len(rolled), err)
	}
	took := converged(v2.Version, "in-sync", online, 10*time.Second)
	t.Logf("template change on %d edges converged in %s", len(online), took.Round(time.Millisecond))
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, i := range online {
			if _, ok := c.Registry.Get(uns.Path(fmt.Sprintf("ent/%s/area/line/e%02d-box1/level", map[bool]string{true: "north", false: "south"}[i < n/2], i))); !ok {
				return fmt.Errorf("edge e%02d: no level tag in the namespace", i)
			}
		}
		return nil
	})

	// The edge that was off comes back and takes its desired version.
	start(offline)
	converged(v2.Version, "in-sync", []int{offline}, 15*time.Second)

	// A rollout by site reaches that site only.
	if _, rolled, err := c.Fleet.Roll(ctx, Rollout{Version: v1.Version, Site: "south"}); err != nil || len(rolled) != n/2 {
		t.Fatalf("rollout to site south: %d edges, %v", len(rolled), err)
	}
	south := make([]int, 0, n/2)
	for i := n / 2; i < n; i++ {
		south = append(south, i)
	}
	converged(v1.Version, "in-sync", south, 10*time.Second)
	if _, _, err := c.Fleet.Roll(ctx, Rollout{Version: v2.Version, Site: "south"}); err != nil {
		t.Fatal(err)
	}
	converged(v2.Version, "in-sync", south, 10*time.Second)
	if st := edges[0].ConfigStatus(); st.Applied != v2.Version {
		t.Fatalf("edge e00 of the north site moved: %+v", st)
	}

	// A version no edge can run (stored past the cloud's checks, as one made
	// for a newer edge would be) is refused by all; they keep version 2.
	bad := strings.Replace(fleetYAML(n, ""), "connector: signals", "connector: plc9000", 1)
	v3, err := c.Fleet.store(ctx, bad, "test", "for newer edges")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Fleet.Roll(ctx, Rollout{Version: v3.Version, All: true}); err != nil {
		t.Fatal(err)
	}
	all := append(online, offline)
	converged(v3.Version, "refused", all, 15*time.Second)
	for _, i := range all {
		st := edges[i].ConfigStatus()
		if st.Applied != v2.Version || !strings.Contains(st.Error, "plc9000") {
			t.Fatalf("edge e%02d: %+v", i, st)
		}
	}
	read := edges[0].Stats().Read
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		if edges[0].Stats().Read <= read {
			return fmt.Errorf("edge e00 stopped reading after refusing a config")
		}
		return nil
	})
}

// The cloud applies retention in the background.
func TestCloudAppliesRetention(t *testing.T) {
	c := startCloudWith(t, Options{Retention: []historian.RetentionRule{{Prefix: "ent/old", Raw: time.Hour}}, RetentionEvery: 100 * time.Millisecond})
	ctx := context.Background()
	old, kept := uns.Path("ent/old/area/line/m/v"), uns.Path("ent/new/area/line/m/v")
	if err := c.Historian.UpsertTags(ctx, []uns.Tag{{Path: old}, {Path: kept}}); err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Add(-2 * time.Hour)
	if err := c.Historian.WriteBatch(ctx, []uns.Sample{{Path: old, TS: ts, Value: uns.Float(1)}, {Path: kept, TS: ts, Value: uns.Float(2)}}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if n, _ := c.Historian.Count(ctx, old); n != 0 {
			return fmt.Errorf("%d old points left", n)
		}
		return nil
	})
	if n, _ := c.Historian.Count(ctx, kept); n != 1 {
		t.Fatalf("%d points of a tag under no rule", n)
	}
}
