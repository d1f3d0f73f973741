package cloud

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/calx-iiot/calx/uns"
	"github.com/calx-iiot/calx/uns/sparkplug"
)

// Fleet health: every edge judged from what it tells about itself (its
// births, deaths and node metrics) and from what the cloud sees of it (when
// data last came, its clock). The verdict is ok, degraded or down, with the
// reasons; the conditions that last become fleet alarms, kept here until
// the alarm engine takes them over.

// HealthOptions are the thresholds of the fleet's health.
type HealthOptions struct {
	// OfflineAfter: an edge offline this long raises an alarm; default 1m.
	OfflineAfter time.Duration
	// StaleAfter: an edge online whose devices sent no data this long has
	// stale data; default 5m. Tags with deadbands and no heartbeat can be
	// quiet that long on purpose: set it above their heartbeat.
	StaleAfter time.Duration
	// OldestUnsent: a value waiting in the edge's buffer longer than this
	// degrades it; default 5m.
	OldestUnsent time.Duration
	// BufferMessages: a buffer deeper than this degrades the edge; default
	// 100,000 messages.
	BufferMessages int64
	// BufferPercent: a buffer fuller than this share of its bound degrades
	// the edge; default 50 %.
	BufferPercent float64
	// ClockSkew: an edge clock this far from the cloud's degrades it;
	// default 2s.
	ClockSkew time.Duration
	// Every is how often the alarms are evaluated; default 1s.
	Every time.Duration
}

func (o HealthOptions) withDefaults() HealthOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.OfflineAfter, time.Minute)
	def(&o.StaleAfter, 5*time.Minute)
	def(&o.OldestUnsent, 5*time.Minute)
	def(&o.ClockSkew, 2*time.Second)
	def(&o.Every, time.Second)
	if o.BufferMessages <= 0 {
		o.BufferMessages = 100_000
	}
	if o.BufferPercent <= 0 {
		o.BufferPercent = 50
	}
	return o
}

// Health verdicts.
const (
	HealthOK       = "ok"
	HealthDegraded = "degraded"
	HealthDown     = "down"
)

// ConnectionHealth is one device connection of an edge, as the edge reports it.
type ConnectionHealth struct {
	Device       string  `json:"device"`
	Online       bool    `json:"online"` // born, not dead, in Sparkplug
	Connected    bool    `json:"connected"`
	LastError    string  `json:"last_error,omitempty"`
	ReadsPerSec  float64 `json:"reads_per_sec"`
	ErrorsPerSec float64 `json:"errors_per_sec"`
	LatencyMs    float64 `json:"latency_ms"`
}

// BufferHealth is an edge's store-and-forward buffer.
type BufferHealth struct {
	Messages            int64   `json:"messages"`
	Bytes               int64   `json:"bytes"`
	FullPercent         float64 `json:"full_percent"` // of the buffer's bound
	OldestUnsentSeconds float64 `json:"oldest_unsent_seconds"`
	Dropped             int64   `json:"dropped"`
}

// EdgeHealth is an edge as the fleet view shows it.
type EdgeHealth struct {
	NodeState
	ID      string `json:"id"` // group/edge
	Version string `json:"version,omitempty"`
	// Update is the edge's software update, when it reports one.
	Update            *UpdateHealth      `json:"update,omitempty"`
	ConfigApplied     int64              `json:"config_applied"`
	ConfigError       string             `json:"config_error,omitempty"`
	UptimeSeconds     float64            `json:"uptime_seconds"`
	CPUPercent        float64            `json:"cpu_percent"`
	MemoryMiB         float64            `json:"memory_mib"`
	DiskFreeMiB       float64            `json:"disk_free_mib"`
	Buffer            BufferHealth       `json:"buffer"`
	ValuesFiltered    int64              `json:"values_filtered"`
	ReductionPercent  float64            `json:"reduction_percent"`
	ReceiptDelayMs    float64            `json:"receipt_delay_ms"`
	DataAgeSeconds    float64            `json:"data_age_seconds"` // since device data last came; -1: never
	ValuesPerSec      float64            `json:"values_per_sec"`   // device values received, over the last evaluation period
	Connections       []ConnectionHealth `json:"connections"`
	Verdict           string             `json:"verdict"`
	Reasons           []string           `json:"reasons"`
	conditions        []condition
	offlineForSeconds float64
}

// UpdateHealth is an edge's last software update: the release it tries
// or tried, the step it is at (release.StepDownloading...), how much of the
// build it has, and why it refused or rolled back.
type UpdateHealth struct {
	Version string  `json:"version"`
	Step    string  `json:"step"`
	Percent float64 `json:"percent"`
	Error   string  `json:"error,omitempty"`
}

// condition is a fault of an edge that is, or after a delay becomes, an alarm.
type condition struct {
	kind, msg string
}

// EdgeHealthOf judges one node state with the node metrics in reg.
func EdgeHealthOf(ns NodeState, reg *Registry, o HealthOptions, now time.Time) EdgeHealth {
	o = o.withDefaults()
	h := EdgeHealth{NodeState: ns, ID: ns.Group + "/" + ns.Edge, DataAgeSeconds: -1, Reasons: []string{}, Connections: []ConnectionHealth{}}
	base := ns.Group + "/_edge/" + ns.Edge + "/"
	num := func(name string) float64 {
		ts, ok := reg.Get(uns.Path(base + name))
		if !ok || !ts.HasVal {
			return 0
		}
		switch ts.Value.Kind {
		case uns.KindFloat:
			return ts.Value.F
		case uns.KindInt, uns.KindBool:
			return float64(ts.Value.I)
		}
		return 0
	}
	str := func(name string) string {
		ts, ok := reg.Get(uns.Path(base + name))
		if !ok || ts.Value.Kind != uns.KindString {
			return ""
		}
		return ts.Value.S
	}
	h.Version = str(sparkplug.MetricCalxVersion)
	h.ConfigApplied, h.ConfigError = int64(num("Config/Version")), str("Config/Error")
	if step := str("Update/Step"); step != "" {
		h.Update = &UpdateHealth{Version: str("Update/Version"), Step: step, Percent: num("Update/Percent"), Error: str("Update/Error")}
	}
	h.UptimeSeconds, h.CPUPercent, h.MemoryMiB, h.DiskFreeMiB = num("Health/UptimeSeconds"), num("Health/CPUPercent"), num("Health/MemoryMiB"), num("Health/DiskFreeMiB")
	h.Buffer = BufferHealth{Messages: int64(num("Buffer/Messages")), Bytes: int64(num("Buffer/Bytes")),
		OldestUnsentSeconds: num("Buffer/OldestUnsentSeconds"), Dropped: int64(num("Buffer/Dropped")), FullPercent: num("Buffer/FullPercent")}
	h.ValuesFiltered, h.ReductionPercent, h.ReceiptDelayMs = int64(num("Values/Filtered")), num("Values/ReductionPercent"), num("Receipt/DelayMs")
	if !ns.LastData.IsZero() {
		h.DataAgeSeconds = now.Sub(ns.LastData).Seconds()
	}
	for _, dev := range ns.Devices {
		c := "Connections/" + dev + "/"
		ch := ConnectionHealth{Device: dev, Online: !slices.Contains(ns.DevicesOffline, dev), LastError: str(c + "LastError"),
			ReadsPerSec: num(c + "ReadsPerSec"), ErrorsPerSec: num(c + "ErrorsPerSec"), LatencyMs: num(c + "LatencyMs")}
		if ts, ok := reg.Get(uns.Path(base + c + "Connected")); ok && ts.HasVal {
			ch.Connected = ts.Value.I != 0
		} else {
			ch.Connected = ch.Online // an edge that does not report its connections
		}
		// A DDEATH is news before the next node metrics.
		ch.Connected = ch.Connected && ch.Online
		h.Connections = append(h.Connections, ch)
	}

	if !ns.Online {
		h.Verdict = HealthDown
		why := ns.DeathReason
		if why == "" {
			why = "no birth since the cloud started"
		}
		if !ns.LastSeen.IsZero() {
			h.offlineForSeconds = now.Sub(ns.LastSeen).Seconds()
			why += fmt.Sprintf("; last seen %s ago", now.Sub(ns.LastSeen).Round(time.Second))
		}
		h.Reasons = append(h.Reasons, "offline: "+why)
		if now.Sub(ns.LastSeen) >= o.OfflineAfter {
			h.conditions = append(h.conditions, condition{"offline", "edge offline for more than " + o.OfflineAfter.String() + ": " + why})
		}
		return h
	}
	add := func(kind, msg string) {
		h.Reasons = append(h.Reasons, msg)
		h.conditions = append(h.conditions, condition{kind, msg})
	}
	for _, c := range h.Connections {
		if !c.Connected {
			msg := "connection " + c.Device + " down"
			if c.LastError != "" {
				msg += ": " + c.LastError
			}
			add("connector/"+c.Device, msg)
		}
	}
	quiet := now.Sub(ns.BirthAt)
	if !ns.LastData.IsZero() {
		quiet = now.Sub(ns.LastData)
	}
	if len(ns.Devices) > 0 && quiet >= o.StaleAfter {
		add("stale", fmt.Sprintf("no device data for %s although the edge is online", quiet.Round(time.Second)))
	}
	if age := time.Duration(h.Buffer.OldestUnsentSeconds * float64(time.Second)); age >= o.OldestUnsent {
		add("buffer", fmt.Sprintf("oldest unsent value waited %s (limit %s)", age.Round(time.Second), o.OldestUnsent))
	} else if h.Buffer.FullPercent >= o.BufferPercent {
		add("buffer", fmt.Sprintf("buffer %.0f %% full (limit %.0f %%)", h.Buffer.FullPercent, o.BufferPercent))
	} else if h.Buffer.Messages > o.BufferMessages {
		add("buffer", fmt.Sprintf("%d messages buffered (limit %d)", h.Buffer.Messages, o.BufferMessages))
	}
	if skew := time.Duration(ns.ClockSkewMs) * time.Millisecond; time.Duration(math.Abs(float64(skew))) >= o.ClockSkew {
		add("clock_skew", fmt.Sprintf("edge clock %s off the cloud's (limit %s)", skew, o.ClockSkew))
	}
	if h.ConfigError != "" {
		add("config", "config not applied: "+h.ConfigError)
	}
	h.Verdict = HealthOK
	if len(h.Reasons) > 0 {
		h.Verdict = HealthDegraded
	}
	return h
}

// FleetAlarm is one alarm of the fleet monitor: a condition of an edge
// from when it was raised until it cleared.
type FleetAlarm struct {
	Edge    string     `json:"edge"` // group/edge
	Kind    string     `json:"kind"` // offline, stale, buffer, clock_skew, config, connector/<device>
	Message string     `json:"message"`
	Active  bool       `json:"active"`
	Raised  time.Time  `json:"raised"`
	Cleared *time.Time `json:"cleared,omitempty"`
}

// journalSize bounds the transitions kept in memory; older ones are in the
// log and, retained per alarm, on MQTT.
const journalSize = 1000

// FleetMonitor evaluates the health of every edge and keeps its alarms.
// Each transition is logged and published, retained, on
// uns/<group>/_edge/<edge>/_alarms/<kind>.
type FleetMonitor struct {
	host *Host
	reg  *Registry
	pub  Publisher
	opts HealthOptions
	log  *slog.Logger

	mu      sync.Mutex
	active  map[string]*FleetAlarm // edge + " " + kind
	journal []FleetAlarm
	rates   map[string]valueRate // by edge id

	cancel context.CancelFunc
	done   chan struct{}
}

// start runs the monitor's loop until stop.
func (m *FleetMonitor) start() {
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel, m.done = cancel, make(chan struct{})
	go func() {
		defer close(m.done)
		m.run(ctx)
	}()
}

// stop ends the loop and waits for it.
func (m *FleetMonitor) stop() {
	if m.cancel != nil {
		m.cancel()
		<-m.done
	}
}

// valueRate is an edge's data rate between two evaluations.
type valueRate struct {
	values uint64
	at     time.Time
	perSec float64
}

func newFleetMonitor(host *Host, reg *Registry, pub Publisher, opts HealthOptions, log *slog.Logger) *FleetMonitor {
	return &FleetMonitor{host: host, reg: reg, pub: pub, opts: opts.withDefaults(), log: log.With("component", "fleet-health"),
		active: map[string]*FleetAlarm{}, rates: map[string]valueRate{}}
}

// Edges returns the health of every edge the host knows, sorted by id.
func (m *FleetMonitor) Edges(now time.Time) []EdgeHealth {
	nodes := m.host.Nodes()
	out := make([]EdgeHealth, 0, len(nodes))
	m.mu.Lock()
	for _, ns := range nodes {
		h := EdgeHealthOf(ns, m.reg, m.opts, now)
		h.ValuesPerSec = m.rates[h.ID].perSec
		out = append(out, h)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b EdgeHealth) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Alarms returns the active alarms and the journal of transitions, newest
// last.
func (m *FleetMonitor) Alarms() (active, journal []FleetAlarm) {
	m.mu.Lock()
	defer m.mu.Unlock()
	active = make([]FleetAlarm, 0, len(m.active))
	for _, a := range m.active {
		active = append(active, *a)
	}
	slices.SortFunc(active, func(a, b FleetAlarm) int { return a.Raised.Compare(b.Raised) })
	return active, slices.Clone(m.journal)
}

func (m *FleetMonitor) run(ctx context.Context) {
	t := time.NewTicker(m.opts.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			m.evaluate(now)
		}
	}
}

// evaluate raises the alarms whose condition holds and clears the others.
func (m *FleetMonitor) evaluate(now time.Time) {
	seen := map[string]bool{}
	var changed []FleetAlarm
	edges := m.Edges(now)
	m.mu.Lock()
	for _, h := range edges {
		r := m.rates[h.ID]
		if dt := now.Sub(r.at).Seconds(); !r.at.IsZero() && dt > 0 && h.Values >= r.values {
			r.perSec = float64(h.Values-r.values) / dt
		}
		r.values, r.at = h.Values, now
		m.rates[h.ID] = r
		for _, c := range h.conditions {
			key := h.ID + " " + c.kind
			seen[key] = true
			if a, ok := m.active[key]; ok {
				a.Message = c.msg
				continue
			}
			a := &FleetAlarm{Edge: h.ID, Kind: c.kind, Message: c.msg, Active: true, Raised: now}
			m.active[key] = a
			changed = append(changed, *a)
		}
	}
	for key, a := range m.active {
		if seen[key] {
			continue
		}
		delete(m.active, key)
		cleared := now
		a.Active, a.Cleared = false, &cleared
		changed = append(changed, *a)
	}
	m.journal = append(m.journal, changed...)
	if over := len(m.journal) - journalSize; over > 0 {
		m.journal = slices.Delete(m.journal, 0, over)
	}
	m.mu.Unlock()
	for _, a := range changed {
		if a.Active {
			m.log.Warn("fleet alarm raised", "edge", a.Edge, "kind", a.Kind, "msg", a.Message)
		} else {
			m.log.Info("fleet alarm cleared", "edge", a.Edge, "kind", a.Kind)
		}
		group, edge, _ := strings.Cut(a.Edge, "/")
		b, _ := json.Marshal(a)
		if err := m.pub.Publish("uns/"+group+"/_edge/"+edge+"/_alarms/"+a.Kind, b, true, 1); err != nil {
			m.log.Warn("fleet alarm not published", "edge", a.Edge, "kind", a.Kind, "err", err)
		}
	}
}
