//go:build linux

package fault

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/calx-iiot/calx/internal/netcut"
	"golang.org/x/crypto/bcrypt"
)

// cnode is a `calx cloud` process of a cluster.
type cnode struct {
	name, http, mqtt, route string
	proc                    *proc
	api                     client
}

// cloudCluster is three cloud processes on loopback, one cluster.
type cloudCluster struct {
	t     *testing.T
	dir   string
	nodes []*cnode
	// proxies[i][j] carries node i's route to node j, when the routes go
	// through proxies.
	proxies [][]*netcut.Proxy
}

// startCloudCluster starts three nodes and waits until each is ready and
// sees the three, one of them leading the backbone's metadata.
func startCloudCluster(t *testing.T) *cloudCluster { return startCloudClusterWith(t, false) }

// startCloudClusterWith starts three nodes; with proxied, each node's
// route to each other node goes through a proxy of its own, and the nodes
// advertise an address nobody listens at, so that no node reaches another
// but through the proxies (NATS would connect to an advertised address it
// learns from the others).
func startCloudClusterWith(t *testing.T, proxied bool) *cloudCluster {
	dir := t.TempDir()
	secret := filepath.Join(dir, "cluster.secret")
	if err := os.WriteFile(secret, []byte("the-secret-of-the-fault-cluster\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("edge-pw"), bcrypt.MinCost)
	cc := &cloudCluster{t: t, dir: dir, nodes: make([]*cnode, 3)}
	for i := range cc.nodes {
		cc.nodes[i] = &cnode{name: fmt.Sprintf("n%d", i+1), http: freeAddr(t), mqtt: freeAddr(t), route: freeAddr(t)}
		cc.nodes[i].api.addr = cc.nodes[i].http
	}
	if proxied {
		cc.proxies = make([][]*netcut.Proxy, len(cc.nodes))
		for i := range cc.nodes {
			cc.proxies[i] = make([]*netcut.Proxy, len(cc.nodes))
			for j, o := range cc.nodes {
				if j != i {
					cc.proxies[i][j] = netcut.New(t, o.route)
				}
			}
		}
	}
	readerHash, _ := bcrypt.GenerateFromPassword([]byte("reader-pw"), bcrypt.MinCost)
	for i, n := range cc.nodes {
		var routes []string
		advertise := ""
		for j, o := range cc.nodes {
			switch {
			case j == i:
			case proxied:
				routes = append(routes, cc.proxies[i][j].Addr())
			default:
				routes = append(routes, o.route)
			}
		}
		if proxied {
			advertise = "\n  advertise: " + freeAddr(t)
		}
		yaml := fmt.Sprintf(`data_dir: %s
http: {listen: %s}
mqtt: {listen: %s}
edges:
  - {username: fault-edge, password_hash: '%[4]s', group: limeworks, edge_id: fault-edge}
  - {username: kiln-edge, password_hash: '%[4]s', group: limeworks, edge_id: kiln-edge}
  - {username: clock-edge, password_hash: '%[4]s', group: limeworks, edge_id: clock-edge}
readers:
  - {username: reader, password_hash: '%[9]s'}
cluster:
  name: calx-fault
  node: %[5]s
  listen: %[6]s%[10]s
  routes: [%[7]s]
  secret_file: %[8]s
`, filepath.Join(dir, n.name), n.http, n.mqtt, hash, n.name, n.route, strings.Join(routes, ", "), secret, readerHash, advertise)
		file := filepath.Join(dir, n.name+".yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		n.proc = &proc{t: t, args: []string{"cloud", "--config", file, "--log-level", "warn"}}
	}
	for _, n := range cc.nodes {
		n.proc.start()
	}
	t.Cleanup(func() {
		for _, n := range cc.nodes {
			n.proc.stop()
			if t.Failed() {
				t.Logf("%s output:\n%s", n.name, n.proc.output())
			}
		}
	})
	for _, n := range cc.nodes {
		cc.waitWhole(n)
	}
	return cc
}

// clusterView is a node's GET /api/v1/cluster.
type clusterView struct {
	Node  string
	Nodes []struct {
		Name   string
		Leader bool
		Up     bool
	}
	Jobs map[string]string
}

func (cc *cloudCluster) view(n *cnode) (clusterView, error) {
	var v clusterView
	err := n.api.do("GET", "/api/v1/cluster", nil, &v)
	return v, err
}

// waitWhole waits until n is ready and sees the three nodes up, one of
// them leading.
func (cc *cloudCluster) waitWhole(n *cnode) {
	cc.t.Helper()
	waitReady(cc.t, n.http, 200*time.Millisecond)
	checkFor(cc.t, 30*time.Second, 200*time.Millisecond, func() error {
		v, err := cc.view(n)
		if err != nil {
			return err
		}
		var names []string
		leaders := 0
		for _, x := range v.Nodes {
			if x.Up {
				names = append(names, x.Name)
			}
			if x.Leader {
				leaders++
			}
		}
		if v.Node != n.name || strings.Join(names, ",") != "n1,n2,n3" || leaders != 1 {
			return fmt.Errorf("%s sees %+v", n.name, v)
		}
		return nil
	})
}

// startEdge starts an edge listing the three brokers, the first that of
// node first.
func (cc *cloudCluster) startEdge(id, devices string, first int) {
	t := cc.t
	var brokers []string
	for k := range cc.nodes {
		brokers = append(brokers, "tcp://"+cc.nodes[(first+k)%len(cc.nodes)].mqtt)
	}
	file := filepath.Join(cc.dir, id+".yaml")
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
`, filepath.Join(cc.dir, id), brokers[0], strings.Join(brokers, ", "), id, id, devices)), 0o600); err != nil {
		t.Fatal(err)
	}
	edge := &proc{t: t, args: []string{"edge", "--config", file, "--log-level", "warn"}}
	edge.start()
	t.Cleanup(func() {
		edge.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", id, edge.output())
		}
	})
}

// history is a counter's values in n's history since from.
func (cc *cloudCluster) history(n *cnode, path string, from time.Time) ([]int64, error) {
	s := &site{api: n.api}
	return s.values(path, from)
}

// wholeCounter checks that a clock counter's values are in order, once
// each, without a gap.
func wholeCounter(path string, vs []int64) error {
	if !slices.IsSorted(vs) || len(slices.Compact(slices.Clone(vs))) != len(vs) {
		return fmt.Errorf("%s: not in order without duplicates", path)
	}
	if len(vs) > 0 {
		if gap := vs[len(vs)-1] - vs[0] + 1 - int64(len(vs)); gap != 0 {
			first := vs[0]
			for i := 1; i < len(vs); i++ {
				if vs[i] != vs[i-1]+1 {
					first = vs[i-1] + 1
					break
				}
			}
			// The clock's value v is of base + v steps of its period.
			at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(first) * 100 * time.Millisecond)
			return fmt.Errorf("%s: %d values missing between %d and %d, the first %d (sampled at %s)", path, gap, vs[0], vs[len(vs)-1], first, at.Format("15:04:05.000"))
		}
	}
	return nil
}

const (
	clock1 = "{id: clock, path: limeworks/fault/utilities/line1/clock, connector: clock, settings: {period: 100ms}}"
	clock2 = "{id: clock, path: limeworks/fault/utilities/line2/clock, connector: clock, settings: {period: 100ms}}"
)

var clusterCounters = []string{"limeworks/fault/utilities/line1/clock/counter", "limeworks/fault/utilities/line2/clock/counter"}

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
	cc := startCloudCluster(t)
	nodes := cc.nodes
	// The kiln's transforms and alarm, then three edges, each listing the
	// three brokers, each first on another node.
	if err := nodes[0].api.do("PUT", "/api/v1/config?message=kiln", []byte(kilnFleet), nil); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-time.Minute)
	cc.startEdge("fault-edge", clock1, 0)
	cc.startEdge("kiln-edge", "{id: kiln1, path: "+kilnPath+", connector: signals, settings: "+kilnSignals+"}", 1)
	cc.startEdge("clock-edge", clock2, 2)
	counters := clusterCounters
	history := func(n *cnode, path string) ([]int64, error) { return cc.history(n, path, since) }
	seen := cc.view
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
	jobs := func(n *cnode) (map[string]string, error) {
		v, err := cc.view(n)
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
	waitCycles := func(n *cnode, want int) int {
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
	var alive []*cnode
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
				return wholeCounter(path, after)
			})
			t.Logf("%s: %d values, %d to %d, none missing, none twice", path, len(after), after[0], after[len(after)-1])
		}
	}
	// The kiln's cycles and alarms go on; its alarm was raised once for
	// each excursion, in each living node's journal.
	waitCycles(alive[0], cyclesBefore+4)
	until := time.Now().Add(-3 * time.Second)
	// Each node journals what the transforms' node sent through the
	// backbone: the two agree once both have read as far (polled, as a
	// node under load may be a few seconds behind the other).
	var journals []string
	checkFor(t, 30*time.Second, 500*time.Millisecond, func() error {
		journals = nil
		for _, n := range alive {
			var journal struct {
				Transitions []struct {
					TS    time.Time `json:"ts"`
					Event string    `json:"event"`
				} `json:"transitions"`
			}
			q := url.Values{"alarm": {kilnPath + "/_alarms/co_high"}, "from": {since.UTC().Format(time.RFC3339Nano)}, "to": {until.UTC().Format(time.RFC3339Nano)}}
			if err := n.api.do("GET", "/api/v1/alarms/journal?"+q.Encode(), nil, &journal); err != nil {
				return err
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
					return fmt.Errorf("%s: two %ss in a row, the second at %s", n.http, tr.Event, tr.TS)
				}
				last = tr.Event
				events = append(events, tr.Event+"@"+tr.TS.UTC().Format(time.RFC3339Nano))
			}
			if raises < 2 {
				return fmt.Errorf("%s: %d raises of co_high in %v", n.http, raises, time.Since(since))
			}
			journals = append(journals, strings.Join(events, " "))
		}
		if journals[0] != journals[1] {
			return fmt.Errorf("the living nodes' journals differ:\n%s\n%s", journals[0], journals[1])
		}
		return nil
	})
	t.Logf("alarm journal, the same on both living nodes: %s", journals[0])
}

// TestCloudClusterRollingRestart restarts the three nodes one after
// another (SIGTERM, start, wait until the node is whole again) while two
// clock edges, first on different nodes, send at a steady rate. All the
// while a client asks every node for the counters' latest value every
// 100 ms: the longest the freshest value any node gave stayed behind the
// clock is printed, and must stay under the failover bound (10 s). In the
// end every node's history has every value of each clock once, in order,
// without a gap.
func TestCloudClusterRollingRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("separate processes: not in -short")
	}
	cc := startCloudCluster(t)
	since := time.Now().Add(-time.Minute)
	cc.startEdge("fault-edge", clock1, 0)
	cc.startEdge("clock-edge", clock2, 1)
	for _, n := range cc.nodes {
		checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
			for _, path := range clusterCounters {
				if vs, err := cc.history(n, path, since); err != nil || len(vs) < 10 {
					return fmt.Errorf("%s: %s has %d values: %v", n.name, path, len(vs), err)
				}
			}
			return nil
		})
	}

	// The live API, as a client behind a load balancer sees it: the
	// freshest value of each counter that any node gives.
	stop := make(chan struct{})
	var mu sync.Mutex
	worst := map[string]time.Duration{}
	var wg sync.WaitGroup
	wg.Go(func() {
		apis := make([]client, len(cc.nodes))
		for i, n := range cc.nodes {
			apis[i].addr = n.http
		}
		latest := map[string]time.Time{}
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			for _, path := range clusterCounters {
				for i := range apis {
					var out struct {
						Tags []struct {
							TS *time.Time `json:"ts"`
						} `json:"tags"`
					}
					if err := apis[i].do("GET", "/api/v1/latest?prefix="+url.QueryEscape(path), nil, &out); err != nil {
						apis[i].token = "" // a node started again has forgotten the session
						continue
					}
					if len(out.Tags) == 1 && out.Tags[0].TS != nil && out.Tags[0].TS.After(latest[path]) {
						latest[path] = *out.Tags[0].TS
					}
				}
				if !latest[path].IsZero() {
					mu.Lock()
					worst[path] = max(worst[path], time.Since(latest[path]))
					mu.Unlock()
				}
			}
		}
	})
	began := time.Now()
	for _, n := range cc.nodes {
		restart := time.Now()
		n.proc.stop()
		n.proc.start()
		n.api.token = "" // sessions are each node's own
		cc.waitWhole(n)
		t.Logf("%s restarted and whole again in %v", n.name, time.Since(restart).Round(time.Millisecond))
		time.Sleep(2 * time.Second) // the cluster runs whole a while
	}
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	t.Logf("rolling restart of three nodes took %v", time.Since(began).Round(time.Second))
	for _, path := range clusterCounters {
		t.Logf("%s: the live API's freshest value was at most %v behind the clock", path, worst[path].Round(time.Millisecond))
		if worst[path] > 10*time.Second {
			t.Errorf("%s: the live API stayed %v behind, more than the failover time", path, worst[path])
		}
	}
	for _, n := range cc.nodes {
		for _, path := range clusterCounters {
			var vs []int64
			checkFor(t, 60*time.Second, 500*time.Millisecond, func() error {
				var err error
				if vs, err = cc.history(n, path, since); err != nil {
					return err
				}
				if last := vs[len(vs)-1]; len(vs) < int(time.Since(began)/(100*time.Millisecond)) {
					return fmt.Errorf("%s: %s has %d values up to %d", n.name, path, len(vs), last)
				}
				return wholeCounter(path, vs)
			})
			t.Logf("%s: %s: %d values, none missing, none twice", n.name, path, len(vs))
		}
	}
}

// cut cuts node k's routes to and from the others (or mends them).
func (cc *cloudCluster) cut(k int, cut bool) {
	for i := range cc.nodes {
		if i != k {
			cc.proxies[i][k].Cut(cut)
			cc.proxies[k][i].Cut(cut)
		}
	}
}

// state is the host's STATE as node n's broker gives it (retained).
func (cc *cloudCluster) state(n *cnode) (string, error) {
	cl := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + n.mqtt).SetClientID(fmt.Sprintf("state-%d", time.Now().UnixNano())).
		SetUsername("reader").SetPassword("reader-pw").SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := cl.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		return "", fmt.Errorf("%s: connect: %v", n.name, tok.Error())
	}
	defer cl.Disconnect(10)
	got := make(chan string, 1)
	cl.Subscribe("spBv1.0/STATE/calx", 1, func(_ paho.Client, m paho.Message) {
		var st struct{ Online bool }
		if json.Unmarshal(m.Payload(), &st) == nil {
			select {
			case got <- map[bool]string{true: "online", false: "offline"}[st.Online]:
			default:
			}
		}
	})
	select {
	case s := <-got:
		return s, nil
	case <-time.After(3 * time.Second):
		return "", fmt.Errorf("%s: no STATE retained", n.name)
	}
}

// TestCloudClusterPartition cuts the routes of the node that speaks as the
// primary host, with an edge on its broker, from the two others (a
// proxy on every route), for 20 s, and mends them. While cut off, the node
// says it is not ready and its broker says the host is offline; the two
// others keep the quorum, take the jobs within 10 s and say the host is
// online: one STATE online per side that can store data, never two holders
// of a job. The edge moves to them. Mended, the cluster is whole again by
// itself, the node says the host is online again, and every node's history
// has every value of the edge once, in order, without a gap.
func TestCloudClusterPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("separate processes: not in -short")
	}
	cc := startCloudClusterWith(t, true)
	var holders map[string]string
	checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		v, err := cc.view(cc.nodes[0])
		if holders = v.Jobs; err == nil && holders["primary-host"] == "" {
			err = fmt.Errorf("jobs %v", holders)
		}
		return err
	})
	k := slices.IndexFunc(cc.nodes, func(n *cnode) bool { return n.name == holders["primary-host"] })
	cut := cc.nodes[k]
	var rest []*cnode
	for i, n := range cc.nodes {
		if i != k {
			rest = append(rest, n)
		}
	}
	since := time.Now().Add(-time.Minute)
	cc.startEdge("fault-edge", clock1, k)
	path := clusterCounters[0]
	checkFor(t, 30*time.Second, 200*time.Millisecond, func() error {
		for _, n := range cc.nodes {
			if vs, err := cc.history(n, path, since); err != nil || len(vs) < 20 {
				return fmt.Errorf("%s: %d values: %v", n.name, len(vs), err)
			}
		}
		return nil
	})

	cc.cut(k, true)
	began := time.Now()
	checkFor(t, 15*time.Second, 200*time.Millisecond, func() error {
		res, err := http.Get("http://" + cut.http + "/readyz")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("%s cut off answers /readyz %d", cut.name, res.StatusCode)
		}
		if st, err := cc.state(cut); err != nil || st != "offline" {
			return fmt.Errorf("%s cut off says the host is %s (%v)", cut.name, st, err)
		}
		return nil
	})
	t.Logf("%s cut off: not ready, STATE offline on its broker after %v", cut.name, time.Since(began).Round(time.Millisecond))
	for _, n := range rest {
		checkFor(t, 15*time.Second, 200*time.Millisecond, func() error {
			v, err := cc.view(n)
			if err != nil {
				return err
			}
			for _, job := range []string{"primary-host", "transforms"} {
				if v.Jobs[job] == "" || v.Jobs[job] == cut.name {
					return fmt.Errorf("%s: %s still held by %q", n.name, job, v.Jobs[job])
				}
			}
			if st, err := cc.state(n); err != nil || st != "online" {
				return fmt.Errorf("%s says the host is %s (%v)", n.name, st, err)
			}
			return nil
		})
	}
	t.Logf("the two others hold the jobs and say the host is online after %v", time.Since(began).Round(time.Millisecond))
	// The edge carries on on the others.
	before, _ := cc.history(rest[0], path, since)
	checkFor(t, 30*time.Second, 500*time.Millisecond, func() error {
		vs, err := cc.history(rest[0], path, since)
		if err != nil || len(vs) < len(before)+50 {
			return fmt.Errorf("%s: %d values, %d at the cut: %v", rest[0].name, len(vs), len(before), err)
		}
		return wholeCounter(path, vs)
	})
	time.Sleep(time.Until(began.Add(20 * time.Second)))

	cc.cut(k, false)
	mended := time.Now()
	cc.waitWhole(cut)
	checkFor(t, 15*time.Second, 200*time.Millisecond, func() error {
		if st, err := cc.state(cut); err != nil || st != "online" {
			return fmt.Errorf("%s mended says the host is %s (%v)", cut.name, st, err)
		}
		return nil
	})
	t.Logf("%s whole again, STATE online on its broker, %v after the routes were mended", cut.name, time.Since(mended).Round(time.Millisecond))
	// A node's copy of the jobs' bucket catches up within moments.
	checkFor(t, 10*time.Second, 200*time.Millisecond, func() error {
		var views []string
		for _, n := range cc.nodes {
			v, err := cc.view(n)
			if err != nil {
				return err
			}
			views = append(views, fmt.Sprint(v.Jobs))
		}
		if views[0] != views[1] || views[1] != views[2] || !strings.Contains(views[0], "transforms") {
			return fmt.Errorf("the nodes see the jobs differently after the partition: %v", views)
		}
		return nil
	})
	for _, n := range cc.nodes {
		var vs []int64
		checkFor(t, 60*time.Second, 500*time.Millisecond, func() error {
			var err error
			if vs, err = cc.history(n, path, since); err != nil {
				return err
			}
			if len(vs) < int(time.Since(began)/(100*time.Millisecond)) {
				return fmt.Errorf("%s: %d values", n.name, len(vs))
			}
			return wholeCounter(path, vs)
		})
		t.Logf("%s: %d values, none missing, none twice", n.name, len(vs))
	}
}
