package cloud

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go/jetstream"
	"go.yaml.in/yaml/v3"

	"github.com/calx-iiot/calx/fleet"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
)

// The fleet config lives in the backbone: every version is a key of its own
// in CALX_CONFIG (version.<n>, written once, never changed), "head" names
// the newest. Each edge's desired version is a key of CALX_DESIRED. An edge
// receives its configuration as a retained message on its own topic
// (sparkplug.ConfigTopic) and reports what it applied on
// sparkplug.ConfigStatusTopic.
const (
	bucketConfig  = "CALX_CONFIG"
	bucketDesired = "CALX_DESIRED"
)

// Errors of the fleet config.
var (
	ErrNoVersion   = errors.New("no such config version")
	ErrBadConfig   = errors.New("config not valid")
	ErrNoSuchEdges = errors.New("no edge matches")
)

// Version is one stored version of the fleet config.
type Version struct {
	Version uint64    `json:"version"`
	Author  string    `json:"author"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
	YAML    string    `json:"yaml,omitempty"`
}

// Desired is the version an edge is to run, and the rollout that set it.
type Desired struct {
	Version uint64    `json:"version"`
	Rollout string    `json:"rollout"`
	At      time.Time `json:"at"`
}

// EdgeConfigState is desired and applied config of one edge.
type EdgeConfigState struct {
	Edge    string                  `json:"edge"` // group/edge_id
	Site    string                  `json:"site,omitempty"`
	Desired uint64                  `json:"desired"`
	Rollout string                  `json:"rollout,omitempty"`
	Status  *sparkplug.ConfigStatus `json:"status,omitempty"` // as the edge reported it; nil before its first report
	State   string                  `json:"state"`            // in-sync, pending, refused, unknown
}

// Rollout selects edges to move to a version: all of them, one, those of a
// site, or those with a device of a template.
type Rollout struct {
	Version  uint64 `json:"version"`
	Edge     string `json:"edge,omitempty"` // group/edge_id
	Site     string `json:"site,omitempty"`
	Template string `json:"template,omitempty"`
	All      bool   `json:"all,omitempty"`
}

// Fleet keeps the versioned fleet config and rolls it out to the edges.
type Fleet struct {
	cfg, desired jetstream.KeyValue
	broker       *Broker   // where the edges' config status comes in
	pub          Publisher // where their configurations go out
	log          *slog.Logger

	mu     sync.Mutex
	status map[string]sparkplug.ConfigStatus // by group/edge, as reported
	cache  map[uint64]*fleet.Config          // parsed versions

	claims atomic.Pointer[claims] // of the newest version
}

// claims is what the newest fleet config says of the namespace: the edge
// node each device path belongs to, and the tag cap of each node it lists.
type claims struct {
	owners  map[uns.Path]string
	maxTags map[string]int
}

func newFleet(ctx context.Context, js jetstream.JetStream, b *Broker, pub Publisher, log *slog.Logger) (*Fleet, error) {
	f := &Fleet{broker: b, pub: pub, log: log.With("component", "fleet"), status: map[string]sparkplug.ConfigStatus{}, cache: map[uint64]*fleet.Config{}}
	var err error
	if f.cfg, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketConfig, Storage: jetstream.FileStorage, History: 1}); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if f.desired, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucketDesired, Storage: jetstream.FileStorage, History: 1}); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	err = b.srv.Subscribe(sparkplug.ConfigStatusFilter, 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		parts := strings.Split(pk.TopicName, "/")
		var st sparkplug.ConfigStatus
		if len(parts) != 4 || json.Unmarshal(pk.Payload, &st) != nil {
			f.log.Warn("malformed config status ignored", "topic", pk.TopicName)
			return
		}
		f.mu.Lock()
		f.status[parts[2]+"/"+parts[3]] = st
		f.mu.Unlock()
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	// Desired configs are retained messages of the broker, which keeps none
	// across a restart: publish them again.
	if err := f.republishAll(ctx); err != nil {
		return nil, err
	}
	if err := f.refreshClaims(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// refreshClaims reads the path owners and tag caps of the newest version.
func (f *Fleet) refreshClaims(ctx context.Context) error {
	head, err := f.Head(ctx)
	if err != nil {
		return err
	}
	cl := &claims{owners: map[uns.Path]string{}, maxTags: map[string]int{}}
	if head > 0 {
		c, err := f.parsed(ctx, head)
		if err != nil {
			return err
		}
		cl.owners = c.Owners()
		for _, e := range c.Edges {
			if e.MaxTags > 0 {
				cl.maxTags[e.Key()] = e.MaxTags
			}
		}
	}
	f.claims.Store(cl)
	return nil
}

// PathOwner is the edge node (group/edge_id) the fleet config gives p to:
// the one of the device whose path is p or the nearest above it.
func (f *Fleet) PathOwner(p uns.Path) (string, bool) {
	cl := f.claims.Load()
	if cl == nil || len(cl.owners) == 0 {
		return "", false
	}
	for {
		if node, ok := cl.owners[p]; ok {
			return node, true
		}
		i := strings.LastIndexByte(string(p), '/')
		if i < 0 {
			return "", false
		}
		p = p[:i]
	}
}

// MaxTags is how many tags an edge node's births may define.
func (f *Fleet) MaxTags(node string) int {
	if cl := f.claims.Load(); cl != nil {
		if n, ok := cl.maxTags[node]; ok {
			return n
		}
	}
	return fleet.DefaultMaxTags
}

func versionKey(v uint64) string { return "version." + strconv.FormatUint(v, 10) }

func desiredKey(edgeKey string) string {
	g, e, _ := strings.Cut(edgeKey, "/")
	return store.Token(g) + "." + store.Token(e)
}

// Head returns the newest version number, 0 when there is none.
func (f *Fleet) Head(ctx context.Context) (uint64, error) {
	e, err := f.cfg.Get(ctx, "head")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("fleet: %w", err)
	}
	return strconv.ParseUint(string(e.Value()), 10, 64)
}

// Get returns a stored version.
func (f *Fleet) Get(ctx context.Context, v uint64) (*Version, error) {
	e, err := f.cfg.Get(ctx, versionKey(v))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: %d", ErrNoVersion, v)
	}
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	var out Version
	if err := json.Unmarshal(e.Value(), &out); err != nil {
		return nil, fmt.Errorf("fleet: version %d: %w", v, err)
	}
	return &out, nil
}

// GetRedacted returns a version with its secrets shown as
// fleet.Redacted: what every API reader gets. Only an edge receives the
// values, in its own configuration.
func (f *Fleet) GetRedacted(ctx context.Context, v uint64) (*Version, error) {
	ver, err := f.Get(ctx, v)
	if err != nil {
		return nil, err
	}
	if ver.YAML, err = fleet.Redact(ver.YAML); err != nil {
		return nil, err
	}
	return ver, nil
}

// parsed returns a version's config, parsed.
func (f *Fleet) parsed(ctx context.Context, v uint64) (*fleet.Config, error) {
	f.mu.Lock()
	c, ok := f.cache[v]
	f.mu.Unlock()
	if ok {
		return c, nil
	}
	ver, err := f.Get(ctx, v)
	if err != nil {
		return nil, err
	}
	if c, err = fleet.Parse(fmt.Sprintf("version %d", v), []byte(ver.YAML)); err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.cache[v] = c
	f.mu.Unlock()
	return c, nil
}

// Versions lists every version, newest first, without their YAML.
func (f *Fleet) Versions(ctx context.Context) ([]Version, error) {
	head, err := f.Head(ctx)
	if err != nil {
		return nil, err
	}
	var out []Version
	for v := head; v > 0; v-- {
		ver, err := f.Get(ctx, v)
		if err != nil {
			return nil, err
		}
		ver.YAML = ""
		out = append(out, *ver)
	}
	return out, nil
}

// Save validates a fleet config and stores it as the next version. It
// changes no edge: a rollout does.
//
// Secrets the API showed as fleet.Redacted keep their values from the
// newest version.
func (f *Fleet) Save(ctx context.Context, raw []byte, author, message string) (*Version, error) {
	text, err := f.Check(ctx, raw)
	if err != nil {
		return nil, err
	}
	return f.store(ctx, text, author, message)
}

// Check reads a config as Save would, and stores nothing: it returns the
// text Save would store (secrets shown as redacted taken from the head),
// or why the config is refused.
func (f *Fleet) Check(ctx context.Context, raw []byte) (string, error) {
	if bytes.Contains(raw, []byte(fleet.Redacted)) {
		head, err := f.Head(ctx)
		if err != nil {
			return "", err
		}
		prev := ""
		if head > 0 {
			v, err := f.Get(ctx, head)
			if err != nil {
				return "", err
			}
			prev = v.YAML
		}
		text, err := fleet.Unredact(string(raw), prev)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrBadConfig, err)
		}
		raw = []byte(text)
	}
	c, err := fleet.Parse("config", raw)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	if err := c.Validate(); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	return string(raw), nil
}

func (f *Fleet) store(ctx context.Context, text, author, message string) (*Version, error) {
	for range 10 {
		head, err := f.Head(ctx)
		if err != nil {
			return nil, err
		}
		ver := Version{Version: head + 1, Author: author, Message: message, At: time.Now().UTC(), YAML: text}
		b, _ := json.Marshal(ver)
		if _, err := f.cfg.Create(ctx, versionKey(ver.Version), b); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) {
				continue // another save took this number
			}
			return nil, fmt.Errorf("fleet: %w", err)
		}
		if _, err := f.cfg.Put(ctx, "head", []byte(strconv.FormatUint(ver.Version, 10))); err != nil {
			return nil, fmt.Errorf("fleet: %w", err)
		}
		if err := f.refreshClaims(ctx); err != nil {
			return nil, err
		}
		return &ver, nil
	}
	return nil, errors.New("fleet: too many saves at once; try again")
}

// Rollback stores an earlier version again as the newest.
func (f *Fleet) Rollback(ctx context.Context, v uint64, author string) (*Version, error) {
	old, err := f.Get(ctx, v)
	if err != nil {
		return nil, err
	}
	return f.store(ctx, old.YAML, author, fmt.Sprintf("rollback to version %d", v))
}

// Diff compares two versions line by line.
func (f *Fleet) Diff(ctx context.Context, from, to uint64) (string, error) {
	a, err := f.GetRedacted(ctx, from)
	if err != nil {
		return "", err
	}
	b, err := f.GetRedacted(ctx, to)
	if err != nil {
		return "", err
	}
	return lineDiff(fmt.Sprintf("version %d", from), fmt.Sprintf("version %d", to), a.YAML, b.YAML), nil
}

// Roll sets the desired version of the edges a rollout selects and sends
// them their configuration. It returns the rollout's id and the edges.
func (f *Fleet) Roll(ctx context.Context, r Rollout) (string, []string, error) {
	c, err := f.parsed(ctx, r.Version)
	if err != nil {
		return "", nil, err
	}
	n := 0
	for _, set := range []bool{r.All, r.Edge != "", r.Site != "", r.Template != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return "", nil, fmt.Errorf("%w: choose one of all, edge, site and template", ErrBadConfig)
	}
	edges := edgesOf(c, r.All, r.Edge, r.Site, r.Template)
	if len(edges) == 0 {
		return "", nil, fmt.Errorf("%w in version %d", ErrNoSuchEdges, r.Version)
	}
	id := fmt.Sprintf("r%d-%d", r.Version, time.Now().UnixMilli())
	var keys []string
	for _, e := range edges {
		d := Desired{Version: r.Version, Rollout: id, At: time.Now().UTC()}
		b, _ := json.Marshal(d)
		if _, err := f.desired.Put(ctx, desiredKey(e.Key()), b); err != nil {
			return "", nil, fmt.Errorf("fleet: %w", err)
		}
		if err := f.send(c, e.Key(), r.Version); err != nil {
			return "", nil, err
		}
		keys = append(keys, e.Key())
	}
	f.log.Info("rollout", "id", id, "version", r.Version, "edges", len(keys))
	return id, keys, nil
}

// edgesOf returns the edges of c a selection names: all of them, one, a
// site's, or those with a device of a template.
func edgesOf(c *fleet.Config, all bool, edge, site, template string) []fleet.Edge {
	var edges []fleet.Edge
	for _, e := range c.Edges {
		switch {
		case all, edge == e.Key(), site != "" && site == e.Site:
			edges = append(edges, e)
		case template != "":
			if slices.ContainsFunc(e.Devices, func(d fleet.Instance) bool { return usesTemplate(c, d.Template, template) }) {
				edges = append(edges, e)
			}
		}
	}
	return edges
}

// usesTemplate reports whether template name is tmpl or extends it.
func usesTemplate(c *fleet.Config, name, tmpl string) bool {
	for seen := 0; name != "" && seen < len(c.Templates)+1; seen++ {
		if name == tmpl {
			return true
		}
		t, ok := c.Template(name)
		if !ok {
			return false
		}
		name = t.Extends
	}
	return false
}

// send publishes an edge's configuration, retained, on its own topic.
func (f *Fleet) send(c *fleet.Config, edgeKey string, v uint64) error {
	ec, err := c.Expand(edgeKey, v)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	b, err := yaml.Marshal(ec)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	g, e, _ := strings.Cut(edgeKey, "/")
	return f.pub.Publish(sparkplug.ConfigTopic(g, e), b, true, 1)
}

// desiredAll returns every edge's desired version, by group/edge_id.
func (f *Fleet) desiredAll(ctx context.Context) (map[string]Desired, error) {
	out, err := byEdge[Desired](ctx, f.desired, f.log, "desired version")
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return out, nil
}

// byEdge reads a bucket keyed by desiredKey into a map by group/edge_id;
// a value that does not decode is logged as a malformed what and left out.
func byEdge[T any](ctx context.Context, kv jetstream.KeyValue, log *slog.Logger, what string) (map[string]T, error) {
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]T{}
	for k := range lister.Keys() {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var v T
		if json.Unmarshal(e.Value(), &v) != nil {
			log.Warn("malformed "+what+" ignored", "key", k)
			continue
		}
		g, ed, _ := strings.Cut(k, ".")
		out[store.Untoken(g)+"/"+store.Untoken(ed)] = v
	}
	return out, nil
}

// republishAll sends every edge its desired configuration again.
func (f *Fleet) republishAll(ctx context.Context) error {
	desired, err := f.desiredAll(ctx)
	if err != nil {
		return err
	}
	for key, d := range desired {
		c, err := f.parsed(ctx, d.Version)
		if err == nil {
			err = f.send(c, key, d.Version)
		}
		if err != nil {
			f.log.Error("desired config not sent", "edge", key, "err", err)
		}
	}
	return nil
}

// States returns, for every edge of the newest version and every edge with a
// desired version, what it is to run and what it runs.
func (f *Fleet) States(ctx context.Context) ([]EdgeConfigState, error) {
	byKey := map[string]*EdgeConfigState{}
	head, err := f.Head(ctx)
	if err != nil {
		return nil, err
	}
	if head > 0 {
		c, err := f.parsed(ctx, head)
		if err != nil {
			return nil, err
		}
		for _, e := range c.Edges {
			byKey[e.Key()] = &EdgeConfigState{Edge: e.Key(), Site: e.Site}
		}
	}
	desired, err := f.desiredAll(ctx)
	if err != nil {
		return nil, err
	}
	for key, d := range desired {
		st := byKey[key]
		if st == nil {
			st = &EdgeConfigState{Edge: key}
			byKey[key] = st
		}
		st.Desired, st.Rollout = d.Version, d.Rollout
	}
	f.mu.Lock()
	for k, s := range f.status {
		st := byKey[k]
		if st == nil {
			st = &EdgeConfigState{Edge: k}
			byKey[k] = st
		}
		s := s
		st.Status = &s
	}
	f.mu.Unlock()
	out := make([]EdgeConfigState, 0, len(byKey))
	for _, st := range byKey {
		switch {
		case st.Desired == 0:
			st.State = "no rollout"
		case st.Status == nil:
			st.State = "unknown"
		case st.Status.Applied == st.Desired:
			st.State = "in-sync"
		case st.Status.Refused == st.Desired:
			st.State = "refused"
		default:
			st.State = "pending"
		}
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b EdgeConfigState) int { return strings.Compare(a.Edge, b.Edge) })
	return out, nil
}

// lineDiff is a unified-style diff of two texts, by longest common
// subsequence of lines; fine for config files of some thousand lines.
func lineDiff(nameA, nameB, a, b string) string {
	la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
	n, m := len(la), len(lb)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if la[i] == lb[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "--- %s\n+++ %s\n", nameA, nameB)
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && la[i] == lb[j]:
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&sb, "+%d: %s\n", j+1, lb[j])
			j++
		default:
			fmt.Fprintf(&sb, "-%d: %s\n", i+1, la[i])
			i++
		}
	}
	return sb.String()
}
