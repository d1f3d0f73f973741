// Package bench measures the whole pipeline the way a user sizes a
// deployment: simulated Sparkplug B edge nodes publish over real MQTT
// connections to a cloud, and the bench reads, through the cloud's own
// /metrics and API, how many values each stage took, how late they were,
// and what it cost; beside the bare limits of the same machine.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/store"
	"github.com/calx-iiot/calx/store/historian"
)

// Fleet is a group of identical simulated edge nodes.
type Fleet struct {
	Group       string  `yaml:"group" json:"group"`
	Edges       int     `yaml:"edges" json:"edges"`
	TagsPerEdge int     `yaml:"tags_per_edge" json:"tags_per_edge"`
	Rate        float64 `yaml:"rate" json:"rate"`                 // DDATA per edge and second
	ChangeRatio float64 `yaml:"change_ratio" json:"change_ratio"` // share of tags that change at each tick
}

// Scenario is what to simulate and for how long.
type Scenario struct {
	Fleets   []Fleet         `yaml:"fleets"`
	Warmup   config.Duration `yaml:"warmup"`
	Duration config.Duration `yaml:"duration"`
	// Bare is how long each bare limit is measured; 0: 3 s, negative: skip.
	Bare config.Duration `yaml:"bare"`
}

// LoadScenario reads a scenario file; errors name the file, line and key.
func LoadScenario(file string) (Scenario, error) {
	var s Scenario
	if err := config.Load(file, &s); err != nil {
		return s, err
	}
	return s, s.Validate(file)
}

// Validate checks the scenario and fills defaults; source names it in errors.
func (s *Scenario) Validate(source string) error {
	if len(s.Fleets) == 0 {
		return fmt.Errorf("%s: fleets: at least one fleet of edges", source)
	}
	groups := map[string]bool{}
	for i := range s.Fleets {
		f := &s.Fleets[i]
		at := fmt.Sprintf("%s: fleets[%d]", source, i)
		if f.Group == "" {
			f.Group = fmt.Sprintf("bench%d", i+1)
		}
		if strings.ContainsAny(f.Group, "/+#") || groups[f.Group] {
			return fmt.Errorf("%s.group: %q: a unique Sparkplug group id without / + #", at, f.Group)
		}
		groups[f.Group] = true
		switch {
		case f.Edges < 1:
			return fmt.Errorf("%s.edges: %d: at least 1", at, f.Edges)
		case f.TagsPerEdge < 1 || f.TagsPerEdge > 9999:
			return fmt.Errorf("%s.tags_per_edge: %d: 1 to 9999", at, f.TagsPerEdge)
		case f.Rate <= 0 || f.Rate > 1000:
			return fmt.Errorf("%s.rate: %v: above 0, at most 1000 messages per edge and second", at, f.Rate)
		case f.ChangeRatio <= 0 || f.ChangeRatio > 1:
			return fmt.Errorf("%s.change_ratio: %v: above 0, at most 1", at, f.ChangeRatio)
		}
	}
	if s.Duration <= 0 {
		return fmt.Errorf("%s: duration: %s: above 0", source, s.Duration.Std())
	}
	if s.Warmup < 0 {
		return fmt.Errorf("%s: warmup: %s: not negative", source, s.Warmup.Std())
	}
	if s.Bare == 0 {
		s.Bare = config.Duration(3 * time.Second)
	}
	return nil
}

// Offered is the values per second the scenario asks for.
func (s Scenario) Offered() float64 {
	var v float64
	for _, f := range s.Fleets {
		v += float64(f.Edges) * f.Rate * float64(f.TagsPerEdge) * f.ChangeRatio
	}
	return v
}

// minCatchUp is the shortest backlog whose catch-up rate is reported;
// catchUpQuiet how long the historian's counter may stand still (a
// checkpoint, a rollup pass) before the catch-up counts as over although
// the backbone still reports a backlog (the stored values are counted
// after it in any case).
const (
	minCatchUp   = 3 * time.Second
	catchUpQuiet = 10 * time.Second
)

// LiveEdges is how many edges of each fleet the live API client follows.
const LiveEdges = 10

// Target is the cloud under test.
type Target struct {
	// HTTP is the base URL of the cloud's HTTP API; MQTT the broker's URL
	// (mqtt://host:port, mqtts://..., or the other schemes of
	// config.BrokerURL), or several, comma-separated, for the nodes of a
	// cluster: the edges take them in turn.
	HTTP, MQTT string
	// Username and Password sign in to the API (an admin or engineer: the
	// bench counts what was stored with a SQL query).
	Username, Password string
	// Credentials gives an edge node its MQTT account.
	Credentials func(ctx context.Context, group, edge string) (Credentials, error)
	// InProcess says the cloud runs in the bench's process: its CPU and
	// memory include the simulated edges'.
	InProcess  bool
	HTTPClient *http.Client
}

// Rate is a stage's throughput over the measured window.
type Rate struct {
	ValuesPerSec float64 `json:"values_per_sec"`
	MsgsPerSec   float64 `json:"messages_per_sec,omitempty"`
}

// Latency is a delay distribution in milliseconds.
type Latency struct {
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
	Count int64   `json:"count"`
	// MaxIsBound says Max is the upper bound of the highest histogram
	// bucket with observations, not the largest observation itself.
	MaxIsBound bool `json:"max_is_bucket_bound,omitempty"`
}

// Result is what a run measured.
type Result struct {
	Scenario Scenario `json:"-"`
	Fleets   []Fleet  `json:"fleets"`
	Edges    int      `json:"edges"`
	Tags     int      `json:"tags"`
	Offered  float64  `json:"offered_values_per_sec"`
	Window   float64  `json:"window_seconds"`

	Sent      Rate `json:"sent"`
	Broker    Rate `json:"broker_accepted"`
	Backbone  Rate `json:"backbone_persisted"`
	Host      Rate `json:"host_decoded"`
	Historian Rate `json:"historian_committed"`
	Live      Rate `json:"live_api"` // of the LiveEdges followed
	LiveEdges int  `json:"live_api_edges"`

	ToHistorian Latency `json:"sample_to_historian"`
	ToLive      Latency `json:"sample_to_live_api"`

	CPUCores     float64            `json:"cpu_cores"`
	PeakRSSMiB   float64            `json:"peak_rss_mib"`
	CPUIncludes  string             `json:"cpu_and_rss_of"`
	MaxLag       map[string]float64 `json:"max_consumer_lag"`
	ValuesSent   int64              `json:"values_sent"`
	ValuesStored int64              `json:"values_stored"`
	Dropped      int64              `json:"dropped"`
	Unacked      int64              `json:"publishes_not_acknowledged"`
	DrainSeconds float64            `json:"drain_seconds"`
	// CatchUp is the historian's rate while it worked off the backlog the
	// run left in the backbone, the edges stopped: its ingest capacity
	// through the whole cloud path (host and historian consumers, backbone
	// and DuckDB) when it is the stage behind. Measured only when the
	// backlog took minCatchUp or more.
	CatchUp        Rate    `json:"historian_catch_up"`
	CatchUpSeconds float64 `json:"historian_catch_up_seconds"`
	CatchUpRatio   float64 `json:"historian_catch_up_to_bare_appender"`
	// Off the durable path: what live views and the UNS JSON republisher
	// could not keep up with during the window (the historian has it all).
	LiveDropped  float64 `json:"live_dropped"`
	FeedsDropped float64 `json:"live_and_uns_mqtt_messages_dropped"`

	BareAppender   float64 `json:"bare_duckdb_appender_values_per_sec"`
	BarePublish    float64 `json:"bare_jetstream_publish_values_per_sec"`
	HistorianRatio float64 `json:"historian_to_bare_appender"`
	BackboneRatio  float64 `json:"backbone_to_bare_publish"`
}

// Run runs the scenario against the target. Progress, a line a second, goes
// to progress (nil: none).
func Run(ctx context.Context, sc Scenario, t Target, progress io.Writer) (*Result, error) {
	if err := sc.Validate("scenario"); err != nil {
		return nil, err
	}
	// Several brokers (the nodes of a cluster): the edges take them in
	// turn.
	var brokers []string
	for u := range strings.SplitSeq(t.MQTT, ",") {
		broker, err := config.BrokerURL(strings.TrimSpace(u))
		if err != nil {
			return nil, fmt.Errorf("target: %w", err)
		}
		brokers = append(brokers, broker)
	}
	if progress == nil {
		progress = io.Discard
	}
	hc := t.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	res := &Result{Scenario: sc, Fleets: sc.Fleets, Offered: sc.Offered(), MaxLag: map[string]float64{}}
	for _, f := range sc.Fleets {
		res.Edges += f.Edges
		res.Tags += f.Edges * f.TagsPerEdge
	}

	// The bare limits first, while nothing else runs.
	if sc.Bare > 0 {
		if err := bare(ctx, sc.Bare.Std(), res, progress); err != nil {
			return nil, err
		}
	}

	a := &api{base: strings.TrimSuffix(t.HTTP, "/"), http: hc}
	if err := a.login(ctx, t.Username, t.Password); err != nil {
		return nil, err
	}
	// The live API is followed for a sample of the edges, as an operator's
	// screen follows a few machines: a browser does not take every value of
	// a large fleet.
	var prefixes []string
	for _, f := range sc.Fleets {
		n := min(f.Edges, LiveEdges)
		res.LiveEdges += n
		for i := range n {
			prefixes = append(prefixes, f.Group+"/"+EdgeID(i))
		}
	}
	live := &liveReader{prefixes: prefixes}
	liveCtx, stopLive := context.WithCancel(ctx)
	defer stopLive()
	ready := make(chan error, 1)
	go live.run(liveCtx, a, ready)
	if err := <-ready; err != nil {
		return nil, err
	}

	// The edges: accounts, connections and births, 32 at a time.
	c := &counters{}
	acks, stopAcks := context.WithCancel(context.Background())
	defer stopAcks()
	var edges []*simEdge
	for _, f := range sc.Fleets {
		for i := range f.Edges {
			edges = append(edges, &simEdge{group: f.Group, id: EdgeID(i), fleet: f, broker: brokers[len(edges)%len(brokers)], c: c, acks: acks,
				rnd: rand.New(rand.NewPCG(uint64(len(edges)), 7))})
		}
	}
	fmt.Fprintf(progress, "connecting %d edges with %d tags...\n", len(edges), res.Tags)
	began := time.Now()
	if err := forEach(ctx, edges, 32, func(e *simEdge) error {
		creds, err := t.Credentials(ctx, e.group, e.id)
		if err != nil {
			return fmt.Errorf("edge %s/%s: credentials: %w", e.group, e.id, err)
		}
		e.creds = creds
		return e.connectAgain(ctx, len(brokers) > 1)
	}); err != nil {
		for _, e := range edges {
			e.stop()
		}
		return nil, err
	}
	fmt.Fprintf(progress, "%d edges born in %s\n", len(edges), time.Since(began).Round(time.Millisecond))
	defer func() {
		for _, e := range edges {
			e.stop()
		}
	}()

	runCtx, stopEdges := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, e := range edges {
		wg.Go(func() { e.run(runCtx) })
	}
	stop := func() {
		stopEdges()
		wg.Wait()
	}
	defer stop()

	// Warm-up, then the measured window, a progress line a second.
	phase := func(name string, d time.Duration, each func(s scrape)) (scrape, error) {
		end := time.Now().Add(d)
		prev, err := a.scrape(ctx)
		if err != nil {
			return prev, err
		}
		prevSent := c.sentValues.Load()
		for {
			left := time.Until(end)
			if left <= 0 {
				return prev, nil
			}
			select {
			case <-ctx.Done():
				return prev, ctx.Err()
			case <-time.After(min(time.Second, left)):
			}
			s, err := a.scrape(ctx)
			if err != nil {
				return s, err
			}
			dt := s.at.Sub(prev.at).Seconds()
			sent := c.sentValues.Load()
			fmt.Fprintf(progress, "%-7s %5.0fs left  sent %9.0f v/s  historian %9.0f v/s  lag %8.0f msgs  rss %6.0f MiB\n", name,
				time.Until(end).Seconds(), float64(sent-prevSent)/dt,
				(s.sum("calx_historian_values_written_total")-prev.sum("calx_historian_values_written_total"))/dt,
				s.max("calx_backbone_consumer_pending"), s.sum("process_resident_memory_bytes")/(1<<20))
			if each != nil {
				each(s)
			}
			prev, prevSent = s, sent
		}
	}
	if _, err := phase("warmup", sc.Warmup.Std(), nil); err != nil {
		return nil, err
	}
	s0, err := a.scrape(ctx)
	if err != nil {
		return nil, err
	}
	sent0, sentMsgs0, acked0, ackedMsgs0, live0 := c.sentValues.Load(), c.sentMsgs.Load(), c.ackedValues.Load(), c.ackedMsgs.Load(), live.count()
	live.record(true)
	peakRSS := s0.sum("process_resident_memory_bytes")
	if _, err := phase("run", sc.Duration.Std(), func(s scrape) {
		peakRSS = math.Max(peakRSS, s.sum("process_resident_memory_bytes"))
		for _, m := range s.fams["calx_backbone_consumer_pending"].GetMetric() {
			var stream, consumer string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "stream":
					stream = l.GetValue()
				case "consumer":
					consumer = l.GetValue()
				}
			}
			key := stream + "/" + consumer
			res.MaxLag[key] = math.Max(res.MaxLag[key], m.GetGauge().GetValue())
		}
	}); err != nil {
		return nil, err
	}
	s1, err := a.scrape(ctx)
	if err != nil {
		return nil, err
	}
	live.record(false)
	sent1, sentMsgs1, acked1, ackedMsgs1, live1 := c.sentValues.Load(), c.sentMsgs.Load(), c.ackedValues.Load(), c.ackedMsgs.Load(), live.count()
	window := s1.at.Sub(s0.at).Seconds()
	res.Window = window
	perMsg := float64(sent1-sent0) / math.Max(1, float64(sentMsgs1-sentMsgs0))
	res.Sent = Rate{ValuesPerSec: float64(sent1-sent0) / window, MsgsPerSec: float64(sentMsgs1-sentMsgs0) / window}
	res.Broker = Rate{ValuesPerSec: float64(acked1-acked0) / window, MsgsPerSec: float64(ackedMsgs1-ackedMsgs0) / window}
	persisted := s1.sum("calx_ingest_persisted_total") - s0.sum("calx_ingest_persisted_total")
	res.Backbone = Rate{ValuesPerSec: persisted * perMsg / window, MsgsPerSec: persisted / window}
	res.Host = Rate{ValuesPerSec: (s1.sum("calx_host_values_total") - s0.sum("calx_host_values_total")) / window}
	res.Historian = Rate{ValuesPerSec: (s1.sum("calx_historian_values_written_total") - s0.sum("calx_historian_values_written_total")) / window}
	res.Live = Rate{ValuesPerSec: float64(live1-live0) / window}
	delta := func(family string) float64 { return s1.sum(family) - s0.sum(family) }
	res.LiveDropped = delta("calx_live_values_dropped_total")
	res.FeedsDropped = delta("calx_uns_mqtt_messages_dropped_total") + delta("calx_live_messages_dropped_total")
	res.CPUCores = (s1.sum("process_cpu_seconds_total") - s0.sum("process_cpu_seconds_total")) / window
	res.PeakRSSMiB = math.Max(peakRSS, s1.sum("process_resident_memory_bytes")) / (1 << 20)
	res.CPUIncludes = "the cloud process"
	if t.InProcess {
		res.CPUIncludes = "the cloud and the simulated edges (one process)"
	}
	h := s1.histogram("calx_historian_sample_delay_seconds").since(s0.histogram("calx_historian_sample_delay_seconds"))
	res.ToHistorian = Latency{P50: 1000 * h.quantile(0.5), P99: 1000 * h.quantile(0.99), Max: 1000 * h.maxBound(), Count: int64(h.total), MaxIsBound: true}
	p50, p99, mx, n := live.quantiles()
	res.ToLive = Latency{P50: 1000 * p50, P99: 1000 * p99, Max: 1000 * mx, Count: int64(n)}
	if res.BareAppender > 0 {
		res.HistorianRatio = res.Historian.ValuesPerSec / res.BareAppender
	}
	if res.BarePublish > 0 {
		res.BackboneRatio = res.Backbone.ValuesPerSec / res.BarePublish
	}

	// Stop the edges, and wait until what they sent is stored.
	stop()
	stopped := time.Now()
	for _, e := range edges {
		e.stop()
	}
	// The historian's catch-up: what it commits from the edges' stop until
	// the backbone's consumers have nothing left for it, or its counter
	// stands still. Followed on /metrics alone, so that counting the stored
	// values (a query over every point) does not compete with the writes
	// being measured.
	atStop, err := a.scrape(ctx)
	if err != nil {
		return nil, err
	}
	written := func(s scrape) float64 { return s.sum("calx_historian_values_written_total") }
	lastRise, shown := atStop, atStop
	backlog := func(s scrape) float64 {
		return s.sum("calx_historian_consumer_pending") + s.max("calx_backbone_consumer_pending")
	}
	for last := atStop; backlog(last) > 0 && time.Since(lastRise.at) < catchUpQuiet; {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
		s, err := a.scrape(ctx)
		if err != nil {
			return nil, err
		}
		last = s
		if written(s) > written(lastRise) {
			lastRise = s
		}
		if dt := s.at.Sub(shown.at).Seconds(); dt >= 1 {
			fmt.Fprintf(progress, "drain  historian %9.0f v/s  lag %8.0f msgs\n",
				(written(s)-written(shown))/dt, s.max("calx_backbone_consumer_pending"))
			shown = s
		}
	}
	var where []string
	for _, f := range sc.Fleets {
		where = append(where, fmt.Sprintf("t.path LIKE '%s/%%/%s/%%'", f.Group, benchDevice))
	}
	query := "SELECT count(*) FROM points p JOIN tags t ON t.id = p.tag_id WHERE p.value IS NOT NULL AND (" + strings.Join(where, " OR ") + ")"
	// A backlog drains as long as it takes; values count as dropped when
	// nothing more was stored for a while.
	const stuck = 30 * time.Second
	var lastStored int64 = -1
	progressAt := time.Now()
	for {
		res.ValuesSent = c.ackedValues.Load()
		res.Unacked = c.sentValues.Load() - res.ValuesSent
		stored, err := a.count(ctx, query)
		if err != nil {
			return nil, fmt.Errorf("counting stored values: %w", err)
		}
		res.ValuesStored = stored
		if stored != lastStored {
			lastStored, progressAt = stored, time.Now()
		}
		if stored >= c.sentValues.Load() || time.Since(progressAt) > stuck {
			break
		}
		fmt.Fprintf(progress, "drain  %9d of %d values stored\n", stored, c.sentValues.Load())
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	res.DrainSeconds = progressAt.Sub(stopped).Seconds()
	if d := lastRise.at.Sub(atStop.at).Seconds(); d >= minCatchUp.Seconds() {
		res.CatchUp = Rate{ValuesPerSec: (written(lastRise) - written(atStop)) / d}
		res.CatchUpSeconds = d
		if res.BareAppender > 0 {
			res.CatchUpRatio = res.CatchUp.ValuesPerSec / res.BareAppender
		}
	}
	res.Dropped = max(0, c.sentValues.Load()-res.ValuesStored)
	return res, nil
}

// EdgeID is the id of a fleet's i-th simulated edge node (from 0).
func EdgeID(i int) string { return fmt.Sprintf("e%05d", i+1) }

// Provisioner gives each edge an MQTT account of its own through the
// target's API (POST /api/v1/edges, as an admin).
func Provisioner(base, user, password string) func(ctx context.Context, group, edge string) (Credentials, error) {
	a := &api{base: strings.TrimSuffix(base, "/"), http: http.DefaultClient}
	var once sync.Once
	var loginErr error
	return func(ctx context.Context, group, edge string) (Credentials, error) {
		once.Do(func() { loginErr = a.login(ctx, user, password) })
		if loginErr != nil {
			return Credentials{}, loginErr
		}
		var out struct {
			Username string `json:"username"`
			Password string `json:"password"`
		}
		if err := a.do(ctx, "POST", "/api/v1/edges", map[string]string{"group": group, "edge_node": edge}, &out); err != nil {
			return Credentials{}, err
		}
		return Credentials{Username: out.Username, Password: out.Password}, nil
	}
}

// JSON is the result with the figures that could not be measured (no
// values in the window) as null.
func (r *Result) JSON() map[string]any {
	b, _ := json.Marshal(struct {
		*Result
		ToHistorian latencyJSON `json:"sample_to_historian"`
		ToLive      latencyJSON `json:"sample_to_live_api"`
	}{r, toJSON(r.ToHistorian), toJSON(r.ToLive)})
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return m
}

type latencyJSON struct {
	P50        *float64 `json:"p50_ms"`
	P99        *float64 `json:"p99_ms"`
	Max        *float64 `json:"max_ms"`
	Count      int64    `json:"count"`
	MaxIsBound bool     `json:"max_is_bucket_bound,omitempty"`
}

func toJSON(l Latency) latencyJSON {
	f := func(v float64) *float64 {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return &v
	}
	return latencyJSON{P50: f(l.P50), P99: f(l.P99), Max: f(l.Max), Count: l.Count, MaxIsBound: l.MaxIsBound}
}

// bare measures the machine's DuckDB appender and JetStream publish limits.
func bare(ctx context.Context, d time.Duration, res *Result, progress io.Writer) error {
	dir, err := os.MkdirTemp("", "calx-bench-bare-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(progress, "bare DuckDB appender for %s...\n", d)
	rows, took, err := historian.BareAppendRate(ctx, dir, d, 10_000)
	if err != nil {
		return err
	}
	res.BareAppender = float64(rows) / took.Seconds()
	const perMsg = 100
	fmt.Fprintf(progress, "bare JetStream publish for %s...\n", d)
	msgs, took, err := store.BarePublishRate(ctx, filepath.Join(dir, "js"), d, perMsg, 1000)
	if err != nil {
		return err
	}
	res.BarePublish = float64(msgs) * perMsg / took.Seconds()
	return nil
}

// forEach calls f for each item, n at a time; the first error stops it.
func forEach[T any](ctx context.Context, items []T, n int, f func(T) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := f(it); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}
