package cloud

import (
	"strings"
	"testing"
	"time"

	"github.com/calx-iiot/calx/uns"
)

func TestEdgeHealthOf(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	opts := HealthOptions{OfflineAfter: time.Minute, StaleAfter: 5 * time.Minute, OldestUnsent: 5 * time.Minute,
		BufferMessages: 1000, BufferPercent: 50, ClockSkew: 2 * time.Second}
	online := NodeState{Group: "g", Edge: "e", Online: true, BirthAt: now.Add(-time.Hour), LastSeen: now,
		LastData: now.Add(-time.Second), Devices: []string{"plc"}}
	type metric struct {
		name string
		v    uns.Value
	}
	cases := []struct {
		name    string
		ns      func(NodeState) NodeState
		metrics []metric
		verdict string
		kinds   []string // the conditions that become alarms
		reason  string   // a text one of the reasons holds
	}{
		{name: "healthy", verdict: HealthOK,
			metrics: []metric{{"Connections/plc/Connected", uns.Bool(true)}, {"Buffer/Messages", uns.Int(10)}}},
		{name: "connection down", verdict: HealthDegraded, kinds: []string{"connector/plc"}, reason: "connection plc down: dial tcp: refused",
			metrics: []metric{{"Connections/plc/Connected", uns.Bool(false)}, {"Connections/plc/LastError", uns.String("dial tcp: refused")}}},
		{name: "device dead though its last metrics said connected", verdict: HealthDegraded, kinds: []string{"connector/plc"},
			ns:      func(ns NodeState) NodeState { ns.DevicesOffline = []string{"plc"}; return ns },
			metrics: []metric{{"Connections/plc/Connected", uns.Bool(true)}}},
		{name: "stale data", verdict: HealthDegraded, kinds: []string{"stale"}, reason: "no device data for 6m0s",
			ns: func(ns NodeState) NodeState { ns.LastData = now.Add(-6 * time.Minute); return ns }},
		{name: "never any data since a birth long ago", verdict: HealthDegraded, kinds: []string{"stale"},
			ns: func(ns NodeState) NodeState { ns.LastData = time.Time{}; return ns }},
		{name: "no devices is never stale", verdict: HealthOK,
			ns: func(ns NodeState) NodeState { ns.Devices, ns.LastData = nil, time.Time{}; return ns }},
		{name: "old unsent value", verdict: HealthDegraded, kinds: []string{"buffer"}, reason: "oldest unsent value waited 10m0s",
			metrics: []metric{{"Buffer/OldestUnsentSeconds", uns.Float(600)}}},
		{name: "full buffer", verdict: HealthDegraded, kinds: []string{"buffer"}, reason: "buffer 75 % full (limit 50 %)",
			metrics: []metric{{"Buffer/FullPercent", uns.Float(75)}, {"Buffer/Messages", uns.Int(10)}}},
		{name: "deep buffer", verdict: HealthDegraded, kinds: []string{"buffer"}, reason: "1001 messages buffered",
			metrics: []metric{{"Buffer/Messages", uns.Int(1001)}}},
		{name: "clock behind", verdict: HealthDegraded, kinds: []string{"clock_skew"},
			ns: func(ns NodeState) NodeState { ns.ClockSkewMs = -2500; return ns }},
		{name: "small skew", verdict: HealthOK,
			ns: func(ns NodeState) NodeState { ns.ClockSkewMs = 1500; return ns }},
		{name: "config refused", verdict: HealthDegraded, kinds: []string{"config"}, reason: "config not applied: line 3",
			metrics: []metric{{"Config/Error", uns.String("line 3: unknown key")}}},
		{name: "just lost", verdict: HealthDown, reason: "offline: connection lost",
			ns: func(ns NodeState) NodeState {
				ns.Online, ns.DeathReason, ns.LastSeen = false, "connection lost: the broker sent the edge's Will", now.Add(-10*time.Second)
				return ns
			}},
		{name: "offline for long", verdict: HealthDown, kinds: []string{"offline"},
			ns: func(ns NodeState) NodeState {
				ns.Online, ns.DeathReason, ns.LastSeen = false, "stopped: the edge sent its NDEATH", now.Add(-2*time.Minute)
				return ns
			}},
		{name: "several faults", verdict: HealthDegraded, kinds: []string{"connector/plc", "stale", "buffer"},
			ns:      func(ns NodeState) NodeState { ns.LastData = now.Add(-time.Hour); return ns },
			metrics: []metric{{"Connections/plc/Connected", uns.Bool(false)}, {"Buffer/OldestUnsentSeconds", uns.Float(3600)}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ns := online
			if c.ns != nil {
				ns = c.ns(ns)
			}
			reg := NewRegistry()
			var samples []uns.Sample
			for _, m := range c.metrics {
				samples = append(samples, uns.Sample{Path: uns.Path("g/_edge/e/" + m.name), TS: now, Value: m.v, Quality: uns.Good})
			}
			reg.Update(samples)
			h := EdgeHealthOf(ns, reg, opts, now)
			if h.Verdict != c.verdict {
				t.Errorf("verdict %s, want %s (reasons %v)", h.Verdict, c.verdict, h.Reasons)
			}
			var kinds []string
			for _, k := range h.conditions {
				kinds = append(kinds, k.kind)
			}
			if strings.Join(kinds, ",") != strings.Join(c.kinds, ",") {
				t.Errorf("conditions %v, want %v", kinds, c.kinds)
			}
			if c.reason != "" && !strings.Contains(strings.Join(h.Reasons, "|"), c.reason) {
				t.Errorf("reasons %q lack %q", h.Reasons, c.reason)
			}
			if h.Verdict == HealthOK && len(h.Reasons) != 0 {
				t.Errorf("ok with reasons %v", h.Reasons)
			}
		})
	}
}
