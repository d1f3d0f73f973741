package fault

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestCloudClusterOfThree runs three `calx cloud` processes as the nodes
// of one cluster on loopback: each lists the three nodes; an edge
// connected to the first node's broker has its values in the third
// node's history too (each node reads the replicated backbone with its
// own consumers); after the first node is killed the two others list it
// as down and stay ready, and the edge, which lists the three brokers,
// moves on: its values go on reaching the third node's history, in order.
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
  - {username: fault-edge, password_hash: '%s', group: limeworks, edge_id: fault-edge}
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

	// An edge on the first node's broker.
	edgeYAML := edgeConfig(filepath.Join(dir, "edge"), freeAddr(t), nodes[0].mqtt, "{period: 100ms}", nodes[1].mqtt, nodes[2].mqtt)
	edgeFile := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(edgeFile, []byte(edgeYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	edge := &proc{t: t, args: []string{"edge", "--config", edgeFile, "--log-level", "warn"}}
	since := time.Now().Add(-time.Minute)
	edge.start()
	t.Cleanup(func() {
		edge.stop()
		if t.Failed() {
			t.Logf("edge output:\n%s", edge.output())
		}
	})
	const counter = "limeworks/fault/utilities/line1/clock/counter"
	history := func(n *node) ([]int64, error) {
		s := &site{api: n.api}
		return s.values(counter, since)
	}
	var onThird []int64
	checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		var err error
		if onThird, err = history(nodes[2]); err != nil || len(onThird) < 20 {
			return fmt.Errorf("the third node has %d values: %v", len(onThird), err)
		}
		return nil
	})
	onFirst, err := history(nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(onFirst[:min(len(onFirst), len(onThird))], onThird[:min(len(onFirst), len(onThird))]) {
		t.Fatalf("the first node's history %v is not the third's %v", onFirst, onThird)
	}

	// The first node dies.
	nodes[0].proc.kill()
	for _, n := range nodes[1:] {
		checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
			v, err := seen(n)
			if err != nil {
				return err
			}
			for _, x := range v.Nodes {
				if x.Name == "n1" && !x.Up {
					return nil
				}
			}
			return fmt.Errorf("%s sees n1 up: %+v", v.Node, v.Nodes)
		})
	}
	// Two nodes of three still store what edges send: ready, with a quorum.
	for _, n := range nodes[1:] {
		waitReady(t, n.http, 200*time.Millisecond)
		if q, err := metric(n.http, "calx_cluster_quorum"); err != nil || q != 1 {
			t.Errorf("%s: calx_cluster_quorum %v %v", n.http, q, err)
		}
	}
	// The edge moves to the next broker it lists, and its values go on
	// reaching the third node's history.
	var after []int64
	checkFor(t, 60*time.Second, 500*time.Millisecond, func() error {
		var err error
		if after, err = history(nodes[2]); err != nil || len(after) < len(onThird)+50 {
			return fmt.Errorf("the third node's history after the first died: %d values (%d before), %v", len(after), len(onThird), err)
		}
		return nil
	})
	if !slices.IsSorted(after) || len(slices.Compact(slices.Clone(after))) != len(after) {
		t.Errorf("the third node's history is not in order without duplicates: %v", after)
	}
	t.Logf("three nodes formed a cluster; after the first died, the edge moved on and the third node has %d values (%d before)", len(after), len(onThird))
}
