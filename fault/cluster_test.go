//go:build linux

package fault

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestCloudClusterOfThree runs three `calx cloud` processes as the nodes
// of one cluster on loopback, and three edges (two clocks, whose every value
// is known, and a kiln with transforms and an alarm), each listing the
// three brokers and first on another node. Every node's history has every
// edge's values; one node holds the primary host's job and one the
// transforms'. The node of the primary host is killed (SIGKILL): within
// 10 s both jobs run on the living nodes; the two stay ready; the edges of
// the dead node move on; in the end each living node's history has every
// value of each clock once, in order, without a gap, and its alarm journal
// the same raises and clears as the other's, never two raises in a row.
func TestCloudClusterOfThree(t *testing.T) {
	if testing.Short() {
		t.Skip("separate processes: not in -short")
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "cluster.secret")
	if err := os.WriteFile(secret, []byte("the-secret-of-the-fault-cluster\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("edge-pw"), bcrypt.MinCost)
	type node struct {
		http, mqtt, route string
		proc              *proc
		api               client
	}
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = &node{http: freeAddr(t), mqtt: freeAddr(t), route: freeAddr(t)}
		nodes[i].api.addr = nodes[i].http
	}
	for i, n := range nodes {
		var routes []string
		for j, o := range nodes {
			if j != i {
				routes = append(routes, o.route)
			}
		}
		yaml := fmt.Sprintf(`data_dir: %s
http: {listen: %s}
mqtt: {listen: %s}
edges:
  - {username: fault-edge, password_hash: '%[4]s', group: limeworks, edge_id: fault-edge}
  - {username: kiln-edge, password_hash: '%[4]s', group: limeworks, edge_id: kiln-edge}
  - {username: clock-edge, password_hash: '%[4]s', group: limeworks, edge_id: clock-edge}
cluster:
  name: calx-fault
  node: n%d
  listen: %s
  routes: [%s]
  secret_file: %s
`, filepath.Join(dir, fmt.Sprintf("n%d", i+1)), n.http, n.mqtt, hash, i+1, n.route, strings.Join(routes, ", "), secret)
		file := filepath.Join(dir, fmt.Sprintf("n%d.yaml", i+1))
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		n.proc = &proc{t: t, args: []string{"cloud", "--config", file, "--log-level", "warn"}}
	}
	for _, n := range nodes {
		n.proc.start()
	}
	t.Cleanup(func() {
		for i, n := range nodes {
			n.proc.stop()
			if t.Failed() {
				t.Logf("n%d output:\n%s", i+1, n.proc.output())
			}
		}
	})
	for _, n := range nodes {
		waitReady(t, n.http, 200*time.Millisecond)
	}
	type view struct {
		Node  string
		Nodes []struct {
			Name   string
			Leader bool
			Up     bool
		}
	}
	seen := func(n *node) (view, error) {
		var v view
		err := n.api.do("GET", "/api/v1/cluster", nil, &v)
		return v, err
	}
	for i, n := range nodes {
		checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
			v, err := seen(n)
			if err != nil {
				return err
			}
			var names []string
			leaders := 0
			for _, x := range v.Nodes {
				names = append(names, x.Name)
				if x.Leader {
					leaders++
				}
			}
			if v.Node != fmt.Sprintf("n%d", i+1) || strings.Join(names, ",") != "n1,n2,n3" || leaders != 1 {
				return fmt.Errorf("n%d sees %+v", i+1, v)
			}
			return nil
		})
	}

	// The kiln's transforms and alarm, then three edges, each listing the
	// three brokers, each first on another node.
	if err := nodes[0].api.do("PUT", "/api/v1/config?message=kiln", []byte(kilnFleet), nil); err != nil {
		t.Fatal(err)
	}
	brokers := func(first int) string {
		var out []string
		for k := range nodes {
			out = append(out, "tcp://"+nodes[(first+k)%len(nodes)].mqtt)
		}
		return strings.Join(out, ", ")
	}
	edges := []struct{ id, devices string }{
		{"fault-edge", "{id: clock, path: limeworks/fault/utilities/line1/clock, connector: clock, settings: {period: 100ms}}"},
		{"kiln-edge", "{id: kiln1, path: " + kilnPath + ", connector: signals, settings: " + kilnSignals + "}"},
		{"clock-edge", "{id: clock, path: limeworks/fault/utilities/line2/clock, connector: clock, settings: {period: 100ms}}"},
	}
	since := time.Now().Add(-time.Minute)
	for i, e := range edges {
		first := strings.SplitN(brokers(i), ", ", 2)[0]
		file := filepath.Join(dir, e.id+".yaml")
		if err := os.WriteFile(file, []byte(fmt.Sprintf(`data_dir: %s
cloud:
  broker: %s
  brokers: [%s]
  username: %s
  password: edge-pw
  group: limeworks
  edge_id: %s
devices:
  - %s
`, filepath.Join(dir, e.id), first, brokers(i), e.id, e.id, e.devices)), 0o600); err != nil {
			t.Fatal(err)
		}
		edge := &proc{t: t, args: []string{"edge", "--config", file, "--log-level", "warn"}}
		edge.start()
		t.Cleanup(func() {
			edge.stop()
			if t.Failed() {
				t.Logf("%s output:\n%s", e.id, edge.output())
			}
		})
	}
	counters := []string{"limeworks/fault/utilities/line1/clock/counter", "limeworks/fault/utilities/line2/clock/counter"}
	history := func(n *node, path string) ([]int64, error) {
		s := &site{api: n.api}
		return s.values(path, since)
	}
	var onThird []int64
	checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		var err error
		if onThird, err = history(nodes[2], counters[0]); err != nil || len(onThird) < 20 {
			return fmt.Errorf("the third node has %d values: %v", len(onThird), err)
		}
		return nil
	})
	onFirst, err := history(nodes[0], counters[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(onFirst[:min(len(onFirst), len(onThird))], onThird[:min(len(onFirst), len(onThird))]) {
		t.Fatalf("the first node's history %v is not the third's %v", onFirst, onThird)
	}

	// The jobs: one holder each, the same seen from every node.
	jobs := func(n *node) (map[string]string, error) {
		var v struct{ Jobs map[string]string }
		err := n.api.do("GET", "/api/v1/cluster", nil, &v)
		return v.Jobs, err
	}
	var holders map[string]string
	checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		for _, n := range nodes {
			h, err := jobs(n)
			if err != nil || h["primary-host"] == "" || h["transforms"] == "" {
				return fmt.Errorf("jobs %v: %v", h, err)
			}
			if holders != nil && fmt.Sprint(h) != fmt.Sprint(holders) {
				return fmt.Errorf("jobs seen differently: %v and %v", h, holders)
			}
			holders = h
		}
		return nil
	})
	waitCycles := func(n *node, want int) int {
		var got int
		checkFor(t, 60*time.Second, 500*time.Millisecond, func() error {
			var out struct {
				Cycles []cycleRow `json:"cycles"`
			}
			q := url.Values{"machine": {kilnPath}, "from": {since.UTC().Format(time.RFC3339)}}
			if err := n.api.do("GET", "/api/v1/cycles?"+q.Encode(), nil, &out); err != nil {
				return err
			}
			if got = len(out.Cycles); got < want {
				return fmt.Errorf("%d cycles, waiting for %d", got, want)
			}
			return nil
		})
		return got
	}
	cyclesBefore := waitCycles(nodes[2], 3)

	// The node that speaks as the primary host dies.
	var dead int
	fmt.Sscanf(holders["primary-host"], "n%d", &dead)
	dead--
	var alive []*node
	for i, n := range nodes {
		if i != dead {
			alive = append(alive, n)
		}
	}
	nodes[dead].proc.kill()
	killed := time.Now()
	for _, n := range alive {
		checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
			h, err := jobs(n)
			if err != nil {
				return err
			}
			for _, job := range []string{"primary-host", "transforms"} {
				if h[job] == "" || h[job] == fmt.Sprintf("n%d", dead+1) {
					return fmt.Errorf("%s not taken over: %v", job, h)
				}
			}
			return nil
		})
	}
	t.Logf("n%d (primary host %s, transforms %s) killed; the jobs ran elsewhere after %v", dead+1, holders["primary-host"], holders["transforms"], time.Since(killed).Round(time.Millisecond))
	for _, n := range alive {
		checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
			v, err := seen(n)
			if err != nil {
				return err
			}
			for _, x := range v.Nodes {
				if x.Name == fmt.Sprintf("n%d", dead+1) && !x.Up {
					return nil
				}
			}
			return fmt.Errorf("%s sees n%d up: %+v", v.Node, dead+1, v.Nodes)
		})
	}
	// Two nodes of three still store what edges send: ready, with a quorum.
	for _, n := range alive {
		waitReady(t, n.http, 200*time.Millisecond)
		if q, err := metric(n.http, "calx_cluster_quorum"); err != nil || q != 1 {
			t.Errorf("%s: calx_cluster_quorum %v %v", n.http, q, err)
		}
	}
	// The edges of the dead node move to the next broker they list; every
	// value of each clock is in the history of both living nodes, once, in
	// order, without a gap.
	for _, n := range alive {
		for _, path := range counters {
			var after []int64
			checkFor(t, 60*time.Second, 500*time.Millisecond, func() error {
				var err error
				if after, err = history(n, path); err != nil {
					return err
				}
				if len(after) < len(onThird)+100 {
					return fmt.Errorf("%s: %d values (%d before the kill)", path, len(after), len(onThird))
				}
				if !slices.IsSorted(after) || len(slices.Compact(slices.Clone(after))) != len(after) {
					return fmt.Errorf("%s: not in order without duplicates", path)
				}
				if gap := after[len(after)-1] - after[0] + 1 - int64(len(after)); gap != 0 {
					return fmt.Errorf("%s: %d values missing between %d and %d", path, gap, after[0], after[len(after)-1])
				}
				return nil
			})
			t.Logf("%s: %d values, %d to %d, none missing, none twice", path, len(after), after[0], after[len(after)-1])
		}
	}
	// The kiln's cycles and alarms go on; its alarm was raised once for
	// each excursion, in each living node's journal.
	waitCycles(alive[0], cyclesBefore+4)
	until := time.Now().Add(-3 * time.Second)
	var journals []string
	for _, n := range alive {
		var journal struct {
			Transitions []struct {
				TS    time.Time `json:"ts"`
				Event string    `json:"event"`
			} `json:"transitions"`
		}
		q := url.Values{"alarm": {kilnPath + "/_alarms/co_high"}, "from": {since.UTC().Format(time.RFC3339Nano)}, "to": {until.UTC().Format(time.RFC3339Nano)}}
		if err := n.api.do("GET", "/api/v1/alarms/journal?"+q.Encode(), nil, &journal); err != nil {
			t.Fatal(err)
		}
		var events []string
		raises, last := 0, ""
		for _, tr := range journal.Transitions {
			if tr.Event != "raise" && tr.Event != "clear" {
				continue
			}
			if tr.Event == "raise" {
				raises++
			}
			if tr.Event == last {
				t.Errorf("%s: two %ss in a row, the second at %s", n.http, tr.Event, tr.TS)
			}
			last = tr.Event
			events = append(events, tr.Event+"@"+tr.TS.UTC().Format(time.RFC3339Nano))
		}
		if raises < 2 {
			t.Errorf("%s: %d raises of co_high in %v", n.http, raises, time.Since(since))
		}
		journals = append(journals, strings.Join(events, " "))
	}
	if journals[0] != journals[1] {
		t.Errorf("the living nodes' journals differ:\n%s\n%s", journals[0], journals[1])
	}
	t.Logf("alarm journal, the same on both living nodes: %s", journals[0])
}
