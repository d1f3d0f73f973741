package store

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/internal/netcut"
	"github.com/calx-iiot/calx/internal/testcert"
)

func freeAddr(t *testing.T) string { return netcut.FreeAddr(t) }

const testSecret = "a-secret-of-the-test-cluster"

// startCluster starts n buses as the nodes of one cluster, at once (each
// waits for a majority of the others).
func startCluster(t *testing.T, n int, tc *tls.Config) []*Bus {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		addrs[i] = freeAddr(t)
	}
	buses := make([]*Bus, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		var routes []string
		for j, a := range addrs {
			if j != i {
				routes = append(routes, a)
			}
		}
		b, err := NewBus(Options{Dir: t.TempDir(), Cluster: &Cluster{Name: "calx-test", Node: fmt.Sprintf("n%d", i+1), Listen: addrs[i], Routes: routes,
			Secret: testSecret, Wait: 30 * time.Second, TLS: tc}})
		if err != nil {
			t.Fatal(err)
		}
		buses[i] = b
		wg.Go(func() { errs[i] = b.Start(context.Background()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i+1, err)
		}
		t.Cleanup(buses[i].Shutdown)
	}
	return buses
}

// TestClusterReplicatesAndSurvivesANode: three nodes replicate the
// backbone's streams and buckets three times; what one node takes the
// others have; with one node gone the other two go on taking and reading
// messages; a node with the wrong secret does not join.
func TestClusterReplicatesAndSurvivesANode(t *testing.T) {
	buses := startCluster(t, 3, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, b := range buses {
		nodes := b.Nodes()
		var names []string
		leaders := 0
		for _, n := range nodes {
			names = append(names, n.Name)
			if n.Leader {
				leaders++
			}
		}
		if strings.Join(names, ",") != "n1,n2,n3" || leaders != 1 {
			t.Fatalf("%s sees %+v", b.srv.Name(), nodes)
		}
	}
	s, err := buses[0].JetStream().Stream(ctx, StreamUNS)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.Config.Replicas != 3 {
		t.Fatalf("stream %s: %v replicas, %v", StreamUNS, info.Config.Replicas, err)
	}
	kv, err := buses[1].JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "CALX_TEST", Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if st, err := kv.Status(ctx); err != nil || st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Replicas != 3 {
		t.Fatalf("bucket: %v %v", st, err)
	}
	// A message taken by one node is read from another.
	if _, err := buses[0].JetStream().Publish(ctx, SubjectUNS+".g.e", []byte("one")); err != nil {
		t.Fatal(err)
	}
	read := func(b *Bus, seq uint64) string {
		t.Helper()
		s, err := b.JetStream().Stream(ctx, StreamUNS)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d from %s: %v", seq, b.srv.Name(), err)
		}
		return string(m.Data)
	}
	if got := read(buses[2], 1); got != "one" {
		t.Fatalf("from n3: %q", got)
	}
	// A durable consumer of one name is each node's own: both read the
	// message, neither takes it from the other.
	for _, b := range buses[:2] {
		cons, err := ResumeConsumer(ctx, b.JetStream(), StreamUNS, jetstream.ConsumerConfig{Durable: "reader", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for m := range batch.Messages() {
			got = append(got, string(m.Data()))
			m.Ack()
		}
		if len(got) != 1 || got[0] != "one" {
			t.Fatalf("%s's reader: %q", b.srv.Name(), got)
		}
	}
	// One node gone: the two others keep the backbone writable.
	buses[0].Shutdown()
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := buses[1].JetStream().Publish(ctx, SubjectUNS+".g.e", []byte("two"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("two nodes of three do not take a message: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := read(buses[2], 2); got != "two" {
		t.Fatalf("after n1 stopped, from n3: %q", got)
	}
	for {
		e, err := kv.Get(ctx, "k")
		if err == nil && string(e.Value()) == "v" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bucket after n1 stopped: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The wrong secret: routes refused, no quorum, no start.
	other, err := NewBus(Options{Dir: t.TempDir(), Cluster: &Cluster{Name: "calx-test", Node: "intruder", Listen: freeAddr(t),
		Routes: []string{buses[1].opts.Cluster.Listen, buses[2].opts.Cluster.Listen}, Secret: "not-the-secret-of-the-cluster", Wait: 3 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "no quorum") {
		other.Shutdown()
		t.Fatalf("a node with the wrong secret started: %v", err)
	}
	for _, n := range buses[1].Nodes() {
		if n.Name == "intruder" {
			t.Fatalf("the intruder is a node: %+v", buses[1].Nodes())
		}
	}
	// Two of three nodes are a majority; one alone is not.
	if !buses[1].Quorum() || !buses[2].Quorum() {
		t.Fatal("two nodes of three without a quorum")
	}
	buses[1].Shutdown()
	deadline = time.Now().Add(30 * time.Second)
	for buses[2].Quorum() {
		if time.Now().After(deadline) {
			t.Fatal("one node of three still has a quorum")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestClusterSettings(t *testing.T) {
	for _, c := range []struct {
		c    Cluster
		want string
	}{
		{Cluster{Node: "n1", Listen: "127.0.0.1:6222", Secret: testSecret}, "name"},
		{Cluster{Name: "c", Listen: "127.0.0.1:6222", Secret: testSecret}, "node"},
		{Cluster{Name: "c", Node: "n1", Listen: "6222", Secret: testSecret}, "listen"},
		{Cluster{Name: "c", Node: "n1", Listen: "127.0.0.1:6222", Routes: []string{"host2"}, Secret: testSecret}, "routes[0]"},
		{Cluster{Name: "c", Node: "n1", Listen: "127.0.0.1:6222", Secret: "short"}, "secret"},
	} {
		if _, err := NewBus(Options{Dir: t.TempDir(), Cluster: &c.c}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %s", c.c, err, c.want)
		}
	}
}

// TestClusterOverTLS: nodes whose routes speak TLS both ways replicate as
// the others do; a node with the secret but a certificate of another CA
// does not join.
func TestClusterOverTLS(t *testing.T) {
	ca := testcert.New(t)
	tc, err := config.MutualTLS(ca.CertFile, ca.KeyFile, ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	buses := startCluster(t, 3, tc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := buses[0].JetStream().Publish(ctx, SubjectUNS+".g.e", []byte("over tls")); err != nil {
		t.Fatal(err)
	}
	s, err := buses[2].JetStream().Stream(ctx, StreamUNS)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := s.GetMsg(ctx, 1); err != nil || string(m.Data) != "over tls" {
		t.Fatalf("from n3: %v", err)
	}
	other := testcert.New(t)
	otc, err := config.MutualTLS(other.CertFile, other.KeyFile, other.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	intruder, err := NewBus(Options{Dir: t.TempDir(), Cluster: &Cluster{Name: "calx-test", Node: "intruder", Listen: freeAddr(t),
		Routes: []string{buses[0].opts.Cluster.Listen}, Secret: testSecret, Wait: 3 * time.Second, TLS: otc}})
	if err != nil {
		t.Fatal(err)
	}
	if err := intruder.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "no quorum") {
		intruder.Shutdown()
		t.Fatalf("a node of another CA started: %v", err)
	}
	for _, n := range buses[0].Nodes() {
		if n.Name == "intruder" {
			t.Fatalf("the intruder is a node: %+v", buses[0].Nodes())
		}
	}
}
