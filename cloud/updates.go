package cloud

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/release"
	"github.com/calx-iiot/calx/uns/sparkplug"
)

// Edge software updates (docs/UPDATES.md). The cloud keeps releases: each
// build in the replicated object store CALX_RELEASES, named by its SHA-256,
// and each release's manifests in CALX_RELEASE_INFO. It assigns a release
// to an edge as a retained message on the edge's own topic
// (sparkplug.UpdateTopic), kept in CALX_UPDATE_DESIRED to be sent again
// after a restart, and serves the build piece by piece to the edge that
// asks on its own topic. Staged rollouts are in updaterollout.go.
const (
	bucketReleases       = "CALX_RELEASES"
	bucketReleaseInfo    = "CALX_RELEASE_INFO"
	bucketUpdateDesired  = "CALX_UPDATE_DESIRED"
	bucketUpdateRollouts = "CALX_UPDATE_ROLLOUTS"
)

// Errors of updates.
var (
	ErrBadRelease    = errors.New("release refused")
	ErrNoRelease     = errors.New("no such release")
	ErrReleaseExists = errors.New("release exists")
	ErrUpdatesOff    = errors.New("updates are off: set updates.public_key in the cloud's config to the release signing key's public half")
	ErrNoRollout     = errors.New("no such update rollout")
)

// Release is a version of Calx for edges: a build per platform.
type Release struct {
	Version string             `json:"version"`
	Notes   string             `json:"notes,omitempty"`
	Builds  []release.Manifest `json:"builds"`
	By      string             `json:"uploaded_by"`
	At      time.Time          `json:"uploaded_at"`
}

// Updates keeps the releases, assigns them to edges and serves their
// builds.
type Updates struct {
	key                     ed25519.PublicKey
	obs                     jetstream.ObjectStore
	info, desired, rollouts jetstream.KeyValue
	broker                  *Broker
	pub                     Publisher
	fleet                   *Fleet
	edges                   func(now time.Time) []EdgeHealth
	// accounts are the edges with an MQTT account (group/edge_id).
	accounts func() []string
	// runs says whether this node drives the rollouts (one node of a
	// cluster does).
	runs  func() bool
	cache string
	log   *slog.Logger

	reqs     chan chunkReq
	queuedMu sync.Mutex
	queued   map[string]int // requests in reqs, by edge
	cacheMu  sync.Mutex
	rollMu   sync.Mutex // one evaluation of the rollouts at a time
	served   atomic.Uint64
	refused  atomic.Uint64
	dropped  atomic.Uint64
	stopLoop context.CancelFunc
	loops    sync.WaitGroup
}

// enqueue takes an edge's request from the broker's goroutine: it never
// blocks, and keeps a few requests of one edge at a time, so that one that
// floods waits its turn rather than taking the others'.
func (u *Updates) enqueue(topic string, payload []byte) {
	parts := strings.Split(topic, "/")
	var r release.ChunkRequest
	if len(parts) != 4 || json.Unmarshal(payload, &r) != nil || r.Validate() != nil {
		u.refused.Add(1)
		u.log.Warn("malformed update request ignored", "topic", topic)
		return
	}
	key := parts[2] + "/" + parts[3]
	u.queuedMu.Lock()
	full := u.queued[key] >= maxQueuedPerEdge
	if !full {
		u.queued[key]++
	}
	u.queuedMu.Unlock()
	if full {
		u.dropped.Add(1) // the edge asks again
		return
	}
	select {
	case u.reqs <- chunkReq{group: parts[2], edge: parts[3], req: r}:
	default:
		u.dequeue(key)
		u.dropped.Add(1)
	}
}

// maxQueuedPerEdge bounds the requests of one edge waiting to be served.
const maxQueuedPerEdge = 4

func (u *Updates) dequeue(key string) {
	u.queuedMu.Lock()
	if u.queued[key]--; u.queued[key] <= 0 {
		delete(u.queued, key)
	}
	u.queuedMu.Unlock()
}

// chunkReq is an edge's request for a piece of a build.
type chunkReq struct {
	group, edge string
	req         release.ChunkRequest
}

// UpdateStats are the counters of the builds served to edges.
type UpdateStats struct {
	ChunksServed, ChunksRefused, RequestsDropped uint64
}

func newUpdates(ctx context.Context, js jetstream.JetStream, key ed25519.PublicKey, b *Broker, pub Publisher, f *Fleet, cacheDir string, log *slog.Logger) (*Updates, error) {
	u := &Updates{key: key, broker: b, pub: pub, fleet: f, cache: cacheDir, log: log.With("component", "updates"),
		reqs: make(chan chunkReq, 256), queued: map[string]int{}, runs: func() bool { return true }}
	var err error
	if u.obs, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: bucketReleases, Storage: jetstream.FileStorage}); err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	for _, kv := range []struct {
		to   *jetstream.KeyValue
		name string
	}{{&u.info, bucketReleaseInfo}, {&u.desired, bucketUpdateDesired}, {&u.rollouts, bucketUpdateRollouts}} {
		if *kv.to, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: kv.name, Storage: jetstream.FileStorage, History: 1}); err != nil {
			return nil, fmt.Errorf("updates: %w", err)
		}
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	return u, nil
}

// start serves builds and drives the rollouts until stop.
func (u *Updates) start() error {
	err := u.broker.srv.Subscribe(sparkplug.UpdateGetFilter, 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		parts := strings.Split(pk.TopicName, "/")
		if len(parts) == 4 {
			// A Calx edge's client id is group.edge_id: one that is not
			// connected here asked another node of the cluster, which
			// answers (the bridge brings every node the request).
			if cl, ok := u.broker.srv.Clients.Get(parts[2] + "." + parts[3]); !ok || cl.Closed() {
				return
			}
		}
		u.enqueue(pk.TopicName, pk.Payload)
	})
	if err != nil {
		return fmt.Errorf("updates: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	u.stopLoop = cancel
	u.loops.Go(func() { u.serve(ctx) })
	u.loops.Go(func() { u.drive(ctx) })
	// Assignments are retained messages of the broker, which keeps none
	// across a restart: publish them again.
	return u.republish(ctx)
}

func (u *Updates) stop() {
	if u.stopLoop != nil {
		u.stopLoop()
		u.loops.Wait()
	}
}

// Stats returns the counters of the builds served.
func (u *Updates) Stats() UpdateStats {
	return UpdateStats{ChunksServed: u.served.Load(), ChunksRefused: u.refused.Load(), RequestsDropped: u.dropped.Load()}
}

func buildName(sha string) string { return "sha256/" + sha }

// Upload checks a build against its manifest and the signing key and keeps
// it as its release's build for the manifest's platform. A build of that
// platform already kept is left as it is: a release, once uploaded, does
// not change (the same build again is answered as kept).
func (u *Updates) Upload(ctx context.Context, m release.Manifest, body io.Reader, by string) (*Release, error) {
	if u.key == nil {
		return nil, ErrUpdatesOff
	}
	if err := release.Verify(u.key, m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRelease, err)
	}
	if r, err := u.Release(ctx, m.Version); err == nil {
		if b, ok := (release.Assignment{Builds: r.Builds}).Build(m.OS, m.Arch); ok {
			if b.SHA256 == m.SHA256 {
				return r, nil
			}
			return nil, fmt.Errorf("%w: %s for %s is kept with another build (sha256 %s); upload it as a new version", ErrReleaseExists, m.Version, m.Platform(), b.SHA256)
		}
	} else if !errors.Is(err, ErrNoRelease) {
		return nil, err
	}
	h := sha256.New()
	n := &countingReader{r: io.TeeReader(io.LimitReader(body, m.Size+1), h)}
	// A build kept already (the same bytes under another version) is not
	// written again: an upload that turns out not to match would take it.
	_, err := u.obs.GetInfo(ctx, buildName(m.SHA256))
	kept := err == nil
	if kept {
		_, err = io.Copy(io.Discard, n)
	} else {
		_, err = u.obs.Put(ctx, jetstream.ObjectMeta{Name: buildName(m.SHA256), Description: m.Version + " " + m.Platform()}, n)
	}
	if err != nil {
		return nil, fmt.Errorf("updates: keep build: %w", err)
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n.n != m.Size || sum != m.SHA256 {
		if !kept {
			u.obs.Delete(context.WithoutCancel(ctx), buildName(m.SHA256))
		}
		return nil, fmt.Errorf("%w: %v: %d bytes with SHA-256 %s, the manifest says %d and %s", ErrBadRelease, release.ErrTampered, n.n, sum, m.Size, m.SHA256)
	}
	for range 10 {
		var r Release
		e, err := u.info.Get(ctx, m.Version)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			r = Release{Version: m.Version}
		case err != nil:
			return nil, fmt.Errorf("updates: %w", err)
		default:
			if err := json.Unmarshal(e.Value(), &r); err != nil {
				return nil, fmt.Errorf("updates: release %s: %w", m.Version, err)
			}
		}
		r.Builds = slices.DeleteFunc(r.Builds, func(b release.Manifest) bool { return b.Platform() == m.Platform() })
		r.Builds = append(r.Builds, m)
		slices.SortFunc(r.Builds, func(a, b release.Manifest) int { return strings.Compare(a.Platform(), b.Platform()) })
		r.Notes = cmp.Or(m.Notes, r.Notes)
		r.By, r.At = by, time.Now().UTC()
		b, _ := json.Marshal(r)
		if e == nil {
			_, err = u.info.Create(ctx, m.Version, b)
		} else {
			_, err = u.info.Update(ctx, m.Version, b, e.Revision())
		}
		if err == nil {
			u.log.Info("release build kept", "version", m.Version, "platform", m.Platform(), "bytes", m.Size, "by", by)
			return &r, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !strings.Contains(err.Error(), "wrong last sequence") {
			return nil, fmt.Errorf("updates: %w", err)
		}
	}
	return nil, errors.New("updates: too many uploads of this release at once; try again")
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// Release returns a release by version.
func (u *Updates) Release(ctx context.Context, version string) (*Release, error) {
	e, err := u.info.Get(ctx, version)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
		return nil, fmt.Errorf("%w: %q", ErrNoRelease, version)
	}
	if err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	var r Release
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, fmt.Errorf("updates: release %s: %w", version, err)
	}
	return &r, nil
}

// Releases lists the releases, the newest upload first.
func (u *Updates) Releases(ctx context.Context) ([]Release, error) {
	lister, err := u.info.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	out := []Release{}
	for k := range lister.Keys() {
		if r, err := u.Release(ctx, k); err == nil {
			out = append(out, *r)
		}
	}
	slices.SortFunc(out, func(a, b Release) int { return b.At.Compare(a.At) })
	return out, nil
}

// assign makes a release the one an edge is to run, and tells the edge.
func (u *Updates) assign(ctx context.Context, edgeKey string, a release.Assignment) error {
	b, _ := json.Marshal(a)
	if _, err := u.desired.Put(ctx, desiredKey(edgeKey), b); err != nil {
		return fmt.Errorf("updates: %w", err)
	}
	g, e, _ := strings.Cut(edgeKey, "/")
	return u.pub.Publish(sparkplug.UpdateTopic(g, e), b, true, 1)
}

// Assigned returns the release each edge is to run, by group/edge_id.
func (u *Updates) Assigned(ctx context.Context) (map[string]release.Assignment, error) {
	out, err := byEdge[release.Assignment](ctx, u.desired, u.log, "assignment")
	if err != nil {
		return nil, fmt.Errorf("updates: %w", err)
	}
	return out, nil
}

func (u *Updates) republish(ctx context.Context) error {
	all, err := u.Assigned(ctx)
	if err != nil {
		return err
	}
	for key, a := range all {
		b, _ := json.Marshal(a)
		g, e, _ := strings.Cut(key, "/")
		if err := u.pub.Publish(sparkplug.UpdateTopic(g, e), b, true, 1); err != nil {
			u.log.Error("assignment not sent", "edge", key, "err", err)
		}
	}
	return nil
}

// serve answers the edges' requests for pieces of builds, one at a time,
// from a copy of each build on this node's disk.
func (u *Updates) serve(ctx context.Context) {
	for {
		var r chunkReq
		select {
		case <-ctx.Done():
			return
		case r = <-u.reqs:
		}
		u.dequeue(r.group + "/" + r.edge)
		h, data := u.chunk(ctx, r.req)
		if h.Error != "" {
			u.refused.Add(1)
		} else {
			u.served.Add(1)
		}
		// QoS 0: a piece lost is asked for again, and the broker holds no
		// unacknowledged pieces for an edge that does not read them.
		if err := u.broker.Publish(sparkplug.UpdateChunkTopic(r.group, r.edge), release.EncodeChunk(h, data), false, 0); err != nil {
			u.log.Warn("update chunk not sent", "edge", r.group+"/"+r.edge, "err", err)
		}
	}
}

func (u *Updates) chunk(ctx context.Context, r release.ChunkRequest) (release.ChunkHeader, []byte) {
	h := release.ChunkHeader{SHA256: r.SHA256, Offset: r.Offset}
	file, err := u.cached(ctx, r.SHA256)
	if err != nil {
		h.Error = err.Error()
		return h, nil
	}
	f, err := os.Open(file)
	if err != nil {
		h.Error = "build not readable on this node"
		u.log.Error("build not readable", "file", file, "err", err)
		return h, nil
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		h.Error = "build not readable on this node"
		return h, nil
	}
	h.Size = st.Size()
	if r.Offset > h.Size {
		h.Error = fmt.Sprintf("offset %d past the build's %d bytes", r.Offset, h.Size)
		return h, nil
	}
	data := make([]byte, min(int64(r.Length), h.Size-r.Offset))
	if _, err := f.ReadAt(data, r.Offset); err != nil && !errors.Is(err, io.EOF) {
		h.Error = "build not readable on this node"
		return h, nil
	}
	return h, data
}

// cached returns the file of a build on this node's disk, fetching it from
// the backbone the first time.
func (u *Updates) cached(ctx context.Context, sha string) (string, error) {
	file := filepath.Join(u.cache, sha)
	if _, err := os.Stat(file); err == nil {
		return file, nil
	}
	u.cacheMu.Lock()
	defer u.cacheMu.Unlock()
	if _, err := os.Stat(file); err == nil {
		return file, nil
	}
	tmp := file + ".tmp"
	gctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if err := u.obs.GetFile(gctx, buildName(sha), tmp); err != nil {
		os.Remove(tmp)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return "", fmt.Errorf("no build with sha256 %s", sha)
		}
		u.log.Error("build not fetched from the backbone", "sha256", sha, "err", err)
		return "", errors.New("build not available on this node now")
	}
	if got, _, err := release.Describe(tmp); err != nil || got != sha {
		os.Remove(tmp)
		return "", errors.New("build damaged in the backbone")
	}
	if err := os.Rename(tmp, file); err != nil {
		return "", fmt.Errorf("updates: %w", err)
	}
	return file, nil
}
