package cloud

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/calx-iiot/calx/release"
	"github.com/calx-iiot/calx/uns/sparkplug"
)

// TestUpdateRequestsBounded: an edge that floods its requests gets a few
// queued and the rest dropped and counted; another edge still gets in, and
// a malformed request is refused and counted.
func TestUpdateRequestsBounded(t *testing.T) {
	u := &Updates{reqs: make(chan chunkReq, 256), queued: map[string]int{}, log: slog.New(slog.DiscardHandler)}
	req, _ := json.Marshal(release.ChunkRequest{SHA256: strings.Repeat("ab", 32), Offset: 0, Length: 1024})
	for range 50 {
		u.enqueue("calx/update-get/g/flood", req)
	}
	u.enqueue("calx/update-get/g/other", req)
	if n := len(u.reqs); n != maxQueuedPerEdge+1 {
		t.Fatalf("%d requests queued, want %d of the flooding edge and 1 of the other", n, maxQueuedPerEdge)
	}
	if st := u.Stats(); st.RequestsDropped != 50-maxQueuedPerEdge {
		t.Fatalf("dropped %d", st.RequestsDropped)
	}
	// Served, the flooding edge may ask again.
	r := <-u.reqs
	u.dequeue(r.group + "/" + r.edge)
	u.enqueue("calx/update-get/g/flood", req)
	if n := len(u.reqs); n != maxQueuedPerEdge+1 {
		t.Fatalf("%d queued after one served", n)
	}
	for _, bad := range [][]byte{[]byte("{"), []byte(`{"sha256":"x","length":1}`), []byte(`{"sha256":"` + strings.Repeat("ab", 32) + `","length":99999999}`)} {
		u.enqueue("calx/update-get/g/other", bad)
	}
	u.enqueue("calx/update-get/g", req)
	if st := u.Stats(); st.ChunksRefused != 4 {
		t.Fatalf("refused %d malformed requests, want 4", st.ChunksRefused)
	}
}

// TestClusterUpdates: a build uploaded on one node is served to an edge
// connected to another, by that node alone, and a rollout started on a
// third assigns it there.
func TestClusterUpdates(t *testing.T) {
	pub, priv, _ := release.Keygen()
	nodes := startClouds(t, 3, func(o *Options) { o.ReleaseKey = pub })
	n1, n2, n3 := nodes[0], nodes[1], nodes[2]
	build := bytes.Repeat([]byte("build of 3.0.0 "), 40000)
	sum := sha256.Sum256(build)
	m := release.Manifest{Version: "3.0.0", OS: "linux", Arch: "arm64", SHA256: hex.EncodeToString(sum[:]), Size: int64(len(build))}
	if err := release.Sign(priv, &m); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Updates.Upload(context.Background(), m, bytes.NewReader(build), "test"); err != nil {
		t.Fatal(err)
	}

	// The edge on node 2, with a Calx edge's client id.
	o := paho.NewClientOptions().AddBroker("tcp://" + n2.Broker.Addr()).SetClientID("g.e1").
		SetUsername("e1").SetPassword("pw1").SetAutoReconnect(false).SetConnectTimeout(5 * time.Second)
	e1 := paho.NewClient(o)
	if tok := e1.Connect(); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { e1.Disconnect(10) })
	chunks := make(chan []byte, 16)
	assigned := make(chan []byte, 16)
	e1.Subscribe(sparkplug.UpdateChunkTopic("g", "e1"), 1, func(_ paho.Client, msg paho.Message) { chunks <- msg.Payload() }).WaitTimeout(5 * time.Second)
	e1.Subscribe(sparkplug.UpdateTopic("g", "e1"), 1, func(_ paho.Client, msg paho.Message) { assigned <- msg.Payload() }).WaitTimeout(5 * time.Second)
	req, _ := json.Marshal(release.ChunkRequest{SHA256: m.SHA256, Offset: 100000, Length: 4096})
	e1.Publish(sparkplug.UpdateGetTopic("g", "e1"), 0, false, req).WaitTimeout(5 * time.Second)
	select {
	case raw := <-chunks:
		h, data, err := release.DecodeChunk(raw)
		if err != nil || h.Error != "" || h.Size != m.Size || !bytes.Equal(data, build[100000:104096]) {
			t.Fatalf("piece: %+v %d bytes %v", h, len(data), err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no piece served")
	}
	time.Sleep(time.Second)
	if len(chunks) != 0 {
		t.Fatalf("%d more answers: a node the edge is not connected to answered", len(chunks))
	}
	served := n1.Updates.Stats().ChunksServed + n2.Updates.Stats().ChunksServed + n3.Updates.Stats().ChunksServed
	if served != 1 || n2.Updates.Stats().ChunksServed != 1 {
		t.Fatalf("served %d in all, %d by the edge's node", served, n2.Updates.Stats().ChunksServed)
	}

	// A rollout started on node 3 reaches the edge on node 2.
	if _, err := n3.Updates.StartRollout(context.Background(), UpdateRolloutRequest{Version: "3.0.0", Edge: "g/e1"}, "test"); err != nil {
		t.Fatal(err)
	}
	select {
	case raw := <-assigned:
		var a release.Assignment
		if err := json.Unmarshal(raw, &a); err != nil || a.Version != "3.0.0" || len(a.Builds) != 1 {
			t.Fatalf("assignment %s: %v", raw, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no assignment")
	}
}
