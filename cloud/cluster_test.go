package cloud

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/calx-iiot/calx/internal/netcut"
	"github.com/calx-iiot/calx/internal/stuck"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/transform"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// clusterNode is one cloud of a cluster started by the test, with what it
// takes to start it again.
type clusterNode struct {
	*Cloud
	opts Options
}

func (n *clusterNode) stop(t *testing.T) {
	stuck.Within(t, time.Minute, "a node's shutdown", func() { n.Shutdown(context.Background()) })
}

// startClouds starts n clouds as the nodes of one cluster, at once, their
// options changed by with.
func startClouds(t *testing.T, n int, with ...func(*Options)) []*clusterNode {
	t.Helper()
	users := []MQTTUser{
		{Username: "e1", PasswordHash: mustHash(t, "pw1"), Role: RoleEdge, Group: "g", EdgeID: "e1"},
		{Username: "reader", PasswordHash: mustHash(t, "pwr"), Role: RoleReader},
		{Username: "mes", PasswordHash: mustHash(t, "pwm"), Role: RoleCustom, Publish: []string{"site/#"}, Subscribe: []string{"site/#"}},
	}
	routes := make([]string, n)
	for i := range routes {
		routes[i] = netcut.FreeAddr(t)
	}
	nodes := make([]*clusterNode, n)
	for i := range n {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		nodes[i] = &clusterNode{opts: Options{DataDir: t.TempDir(), MQTT: BrokerOptions{Listen: "127.0.0.1:0", Users: users},
			Cluster: &store.Cluster{Name: "calx-test", Node: fmt.Sprintf("n%d", i+1), Listen: routes[i], Routes: others,
				Secret: "a-secret-of-the-test-cluster", Wait: time.Minute}}}
		for _, f := range with {
			f(&nodes[i].opts)
		}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, nd := range nodes {
		wg.Go(func() { errs[i] = nd.start() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, nd := range nodes {
			wg.Go(func() { nd.stop(t) })
		}
		wg.Wait()
	})
	return nodes
}

func (n *clusterNode) start() error {
	c, err := New(n.opts)
	if err != nil {
		return err
	}
	n.Cloud = c
	return c.Start(context.Background())
}

// received collects the messages a client gets, as "topic=payload
// retained".
type received struct {
	mu   sync.Mutex
	msgs []string
}

func (r *received) handler(_ paho.Client, m paho.Message) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, fmt.Sprintf("%s=%s retained=%v", m.Topic(), m.Payload(), m.Retained()))
}

func (r *received) count(want string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == want {
			n++
		}
	}
	return n
}

func subscribe(t *testing.T, c *Cloud, user, pw, filter string) *received {
	t.Helper()
	cl, err := dial(t, c, user, pw)
	if err != nil {
		t.Fatal(err)
	}
	r := &received{}
	if tok := cl.Subscribe(filter, 1, r.handler); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	return r
}

func onceWithin(t *testing.T, r *received, want string, d time.Duration) {
	t.Helper()
	checkFor(t, d, 20*time.Millisecond, func() error {
		if n := r.count(want); n != 1 {
			return fmt.Errorf("%q received %d times, want once", want, n)
		}
		return nil
	})
}

// What a client publishes on one node reaches the subscribers of every
// node once; retained messages, and the cloud's own (configurations, the
// host's STATE), are on every node, those of a node that was down
// included; the primary host and the transforms run on one node each.
func TestClusterMQTTAndJobs(t *testing.T) {
	nodes := startClouds(t, 3)
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]

	at1 := subscribe(t, n1.Cloud, "reader", "pwr", "site/#")
	at3 := subscribe(t, n3.Cloud, "reader", "pwr", "site/#")
	mes, err := dial(t, n1.Cloud, "mes", "pwm")
	if err != nil {
		t.Fatal(err)
	}
	mes.Publish("site/mes/order", 1, false, "4711").WaitTimeout(5 * time.Second)
	onceWithin(t, at3, "site/mes/order=4711 retained=false", 5*time.Second)
	onceWithin(t, at1, "site/mes/order=4711 retained=false", time.Second)
	time.Sleep(500 * time.Millisecond) // a loop would bring it again
	onceWithin(t, at1, "site/mes/order=4711 retained=false", time.Second)
	onceWithin(t, at3, "site/mes/order=4711 retained=false", time.Second)

	if tok := mes.Publish("site/mes/recipe", 1, true, "r7"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("retained publish: %v", tok.Error())
	}
	if err := n3.publisher().Publish("site/cloud/notice", []byte("hello"), true, 1); err != nil {
		t.Fatal(err)
	}
	later := subscribe(t, n2.Cloud, "reader", "pwr", "site/#")
	onceWithin(t, later, "site/mes/recipe=r7 retained=true", 5*time.Second)
	onceWithin(t, later, "site/cloud/notice=hello retained=true", 5*time.Second)
	onceWithin(t, at1, "site/cloud/notice=hello retained=false", 5*time.Second)

	// One holder of each job, the same seen from every node.
	var holders map[string]string
	checkFor(t, 20*time.Second, 100*time.Millisecond, func() error {
		for _, n := range nodes {
			h, err := n.Jobs(context.Background())
			if err != nil {
				return err
			}
			if h[JobHost] == "" || h[JobTransforms] == "" {
				return fmt.Errorf("jobs seen from %s: %v", n.Bus.Node(), h)
			}
			if holders != nil && fmt.Sprint(h) != fmt.Sprint(holders) {
				return fmt.Errorf("%s sees %v, another %v", n.Bus.Node(), h, holders)
			}
			holders = h
		}
		return nil
	})
	// Each node says what it is, every node hears it.
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		d, err := n2.NodeDetails(context.Background())
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if got := d[n.Bus.Node()]; got.MQTT != n.Broker.Addr() || got.Started.IsZero() {
				return fmt.Errorf("%s says %+v of %s", n2.Bus.Node(), got, n.Bus.Node())
			}
		}
		return nil
	})
	running := 0
	for _, n := range nodes {
		if n.transform.Load() != nil {
			running++
			if holders[JobTransforms] != n.Bus.Node() {
				t.Fatalf("transforms run on %s, held by %s", n.Bus.Node(), holders[JobTransforms])
			}
		}
	}
	if running != 1 {
		t.Fatalf("transforms run on %d nodes", running)
	}
	// Every node's broker has the host online, retained.
	for _, n := range nodes {
		st := subscribe(t, n.Cloud, "reader", "pwr", "spBv1.0/STATE/calx")
		checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
			st.mu.Lock()
			defer st.mu.Unlock()
			if len(st.msgs) == 0 || !strings.Contains(st.msgs[0], `"online":true`) || !strings.HasSuffix(st.msgs[0], "retained=true") {
				return fmt.Errorf("STATE on %s: %v", n.Bus.Node(), st.msgs)
			}
			return nil
		})
	}

	// An edge on the first node gets a command the third node's host
	// sends, once.
	e1, err := dial(t, n1.Cloud, "e1", "pw1")
	if err != nil {
		t.Fatal(err)
	}
	cmds := &received{}
	if tok := e1.Subscribe("spBv1.0/g/NCMD/e1", 1, cmds.handler); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	f := &foreign{t: t, cl: e1}
	ts := uint64(time.Now().UnixMilli())
	f.send(sparkplug.NBIRTH, "", &pb.Payload{Timestamp: proto.Uint64(ts), Metrics: []*pb.Payload_Metric{
		metric(sparkplug.MetricBdSeq, 0, pb.DataType_Int64, uns.Int(0), ts),
		metric("Node Control/Rebirth", 0, pb.DataType_Boolean, uns.Bool(false), ts),
	}})
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		for _, ns := range n3.Host.Nodes() {
			if ns.Edge == "e1" && ns.Online {
				return nil
			}
		}
		return errors.New("the third node's host has not seen e1's birth")
	})
	if err := n3.Host.RequestRebirth("g", "e1"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		cmds.mu.Lock()
		defer cmds.mu.Unlock()
		if len(cmds.msgs) != 1 {
			return fmt.Errorf("commands on the first node: %v", cmds.msgs)
		}
		return nil
	})
	time.Sleep(300 * time.Millisecond)
	if cmds.mu.Lock(); len(cmds.msgs) != 1 {
		t.Fatalf("commands on the first node: %v", cmds.msgs)
	}
	cmds.mu.Unlock()

	// The edge revoked on one node is forgotten by every node's host.
	if _, err := n2.RevokeEdge(context.Background(), "g", "e1"); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		for _, n := range nodes {
			for _, ns := range n.Host.Nodes() {
				if ns.Edge == "e1" {
					return fmt.Errorf("%s's host still knows e1", n.Bus.Node())
				}
			}
		}
		return nil
	})

	// An account made on one node works on the others; disabled on one,
	// its sessions end on every node and it is refused everywhere; deleted,
	// the same.
	user, pw, err := n1.ProvisionEdge(context.Background(), "g", "e9")
	if err != nil {
		t.Fatal(err)
	}
	var e9 paho.Client
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		var err error
		e9, err = dial(t, n3.Cloud, user, pw)
		return err
	})
	if err := n1.SetMQTTUserDisabled(context.Background(), user, true); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if e9.IsConnectionOpen() {
			return errors.New("a disabled account's session goes on on another node")
		}
		return nil
	})
	for _, n := range nodes {
		if _, err := dial(t, n.Cloud, user, pw); err == nil {
			t.Fatalf("a disabled account connects to %s", n.Bus.Node())
		}
	}
	if err := n2.SetMQTTUserDisabled(context.Background(), user, false); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		_, err := dial(t, n1.Cloud, user, pw)
		return err
	})
	if err := n2.DeleteMQTTUser(context.Background(), user); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		for _, n := range nodes {
			if _, err := dial(t, n.Cloud, user, pw); err == nil {
				return fmt.Errorf("a deleted account connects to %s", n.Bus.Node())
			}
		}
		return nil
	})

	// The MCP confirmations' key is the same on every node, and an answer
	// is redeemed once in the cluster.
	k1, err1 := n1.MCPConfirmKey(context.Background())
	k3, err3 := n3.MCPConfirmKey(context.Background())
	if err1 != nil || err3 != nil || len(k1) != 32 || string(k1) != string(k3) {
		t.Fatalf("MCP keys differ or fail: %v %v", err1, err3)
	}
	if first, err := n2.RedeemOnce(context.Background(), "answer-1"); !first || err != nil {
		t.Fatalf("first redemption: %v %v", first, err)
	}
	if again, err := n3.RedeemOnce(context.Background(), "answer-1"); again || err != nil {
		t.Fatalf("an answer redeemed on one node is taken again on another: %v %v", again, err)
	}

	// A node that does not run the transforms passes operators' actions
	// and questions to the one that does.
	var other *clusterNode
	for _, n := range nodes {
		if n.transform.Load() == nil {
			other = n
		}
	}
	if _, err := other.Alarms(context.Background()); err != nil {
		t.Fatalf("alarms asked of %s: %v", other.Bus.Node(), err)
	}
	if _, err := other.AckAlarm(context.Background(), "a/b/_alarms/none", "op", ""); !errors.Is(err, transform.ErrNoAlarm) {
		t.Fatalf("ack of an unknown alarm through %s: %v", other.Bus.Node(), err)
	}

	// The node with the transforms stops: another takes them within
	// seconds. A node started again has the retained messages.
	var leaving *clusterNode
	for _, n := range nodes {
		if n.Bus.Node() == holders[JobTransforms] {
			leaving = n
		}
	}
	began := time.Now()
	leaving.stop(t)
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		for _, n := range nodes {
			if n != leaving && n.transform.Load() != nil {
				return nil
			}
		}
		return errors.New("no node took the transforms")
	})
	t.Logf("transforms moved from %s in %v", leaving.Bus.Node(), time.Since(began).Round(time.Millisecond))
	if err := leaving.start(); err != nil {
		t.Fatal(err)
	}
	back := subscribe(t, leaving.Cloud, "reader", "pwr", "site/#")
	onceWithin(t, back, "site/mes/recipe=r7 retained=true", 5*time.Second)
}
