package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape reads a Prometheus text exposition with the reference parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, res.Status)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("GET %s: not Prometheus text format: %v", url, err)
	}
	return fams
}

// labelled finds the series of a family whose labels include all of want.
func labelled(f *dto.MetricFamily, want ...string) *dto.Metric {
	for _, m := range f.GetMetric() {
		var have []string
		for _, l := range m.GetLabel() {
			have = append(have, l.GetName()+"="+l.GetValue())
		}
		ok := true
		for _, w := range want {
			ok = ok && slices.Contains(have, w)
		}
		if ok {
			return m
		}
	}
	return nil
}

// checkCloudMetrics reads /metrics of a running demo and checks every
// family an operator needs: values and messages per stage, consumer lag,
// historian write latency and batch sizes, broker connections, malformed
// payloads, API latency by route and the fleet's health.
func checkCloudMetrics(t *testing.T, base string) {
	t.Helper()
	fams := scrape(t, base+"/metrics")
	value := func(m *dto.Metric) float64 {
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
		return 0
	}
	for _, c := range []struct {
		family string
		typ    dto.MetricType
		labels []string
		check  func(v float64) error
	}{
		{"calx_broker_clients", dto.MetricType_GAUGE, nil, atLeast(2)}, // two edges, the host's link
		{"calx_broker_messages_received_total", dto.MetricType_COUNTER, nil, atLeast(1)},
		{"calx_ingest_persisted_total", dto.MetricType_COUNTER, nil, atLeast(1)},
		{"calx_ingest_bad_topics_total", dto.MetricType_COUNTER, nil, exactly(0)},
		{"calx_update_chunks_served_total", dto.MetricType_COUNTER, nil, exactly(0)},
		{"calx_update_requests_dropped_total", dto.MetricType_COUNTER, nil, exactly(0)},
		{"calx_host_messages_total", dto.MetricType_COUNTER, nil, atLeast(1)},
		{"calx_host_values_total", dto.MetricType_COUNTER, nil, atLeast(100)},
		{"calx_host_malformed_payloads_total", dto.MetricType_COUNTER, nil, exactly(0)},
		{"calx_historian_values_written_total", dto.MetricType_COUNTER, nil, atLeast(100)},
		{"calx_historian_write_seconds", dto.MetricType_HISTOGRAM, nil, atLeast(1)},
		{"calx_historian_batch_values", dto.MetricType_HISTOGRAM, nil, atLeast(1)},
		{"calx_historian_sample_delay_seconds", dto.MetricType_HISTOGRAM, nil, atLeast(100)},
		{"calx_backbone_consumer_pending", dto.MetricType_GAUGE, []string{"stream=CALX_UNS", "consumer=historian"}, nil},
		{"calx_backbone_consumer_pending", dto.MetricType_GAUGE, []string{"stream=CALX_SPB", "consumer=host"}, nil},
		{"calx_backbone_consumer_ack_pending", dto.MetricType_GAUGE, []string{"consumer=historian"}, nil},
		{"calx_http_request_duration_seconds", dto.MetricType_HISTOGRAM, []string{"route=/api/v1/history", "method=GET", "code=400"}, atLeast(5)},
		{"calx_http_request_duration_seconds", dto.MetricType_HISTOGRAM, []string{"route=/api/v1/namespace", "code=200"}, atLeast(1)},
		{"calx_live_values_dropped_total", dto.MetricType_COUNTER, nil, nil},
		{"calx_live_messages_dropped_total", dto.MetricType_COUNTER, nil, exactly(0)},
		{"calx_uns_mqtt_values_total", dto.MetricType_COUNTER, nil, atLeast(100)},
		{"calx_uns_mqtt_messages_dropped_total", dto.MetricType_COUNTER, nil, exactly(0)},
		{"calx_edge_online", dto.MetricType_GAUGE, []string{"group=limeworks", "edge_node=lyon-edge"}, exactly(1)},
		{"calx_edge_health", dto.MetricType_GAUGE, []string{"edge_node=ghent-edge", "verdict=down"}, exactly(0)},
		{"calx_edge_buffer_messages", dto.MetricType_GAUGE, []string{"edge_node=ghent-edge"}, nil},
		{"calx_edge_buffer_oldest_seconds", dto.MetricType_GAUGE, []string{"edge_node=ghent-edge"}, nil},
		{"calx_edge_values_dropped_total", dto.MetricType_COUNTER, []string{"edge_node=ghent-edge"}, exactly(0)},
		{"calx_edge_values_received_total", dto.MetricType_COUNTER, []string{"edge_node=ghent-edge"}, atLeast(10)},
		{"calx_edge_malformed_payloads_total", dto.MetricType_COUNTER, []string{"edge_node=ghent-edge"}, exactly(0)},
		{"calx_fleet_alarms_active", dto.MetricType_GAUGE, []string{"kind=offline"}, exactly(0)},
		{"process_resident_memory_bytes", dto.MetricType_GAUGE, nil, atLeast(1)},
		{"go_goroutines", dto.MetricType_GAUGE, nil, atLeast(1)},
	} {
		f, ok := fams[c.family]
		if !ok {
			t.Errorf("/metrics lacks the family %s", c.family)
			continue
		}
		if f.GetType() != c.typ {
			t.Errorf("%s is a %s, want %s", c.family, f.GetType(), c.typ)
			continue
		}
		m := labelled(f, c.labels...)
		if m == nil {
			t.Errorf("%s has no series with %s", c.family, strings.Join(c.labels, ","))
			continue
		}
		if c.check != nil {
			if err := c.check(value(m)); err != nil {
				t.Errorf("%s{%s}: %v", c.family, strings.Join(c.labels, ","), err)
			}
		}
	}
	// The historian's backlog is its consumer's, from the same listing.
	backlog := fams["calx_historian_consumer_pending"]
	pending := labelled(fams["calx_backbone_consumer_pending"], "consumer=historian")
	acking := labelled(fams["calx_backbone_consumer_ack_pending"], "consumer=historian")
	if backlog == nil || len(backlog.GetMetric()) != 1 || pending == nil || acking == nil {
		t.Errorf("historian backlog series missing")
	} else if b := value(backlog.GetMetric()[0]); b != value(pending)+value(acking) {
		t.Errorf("historian backlog %v, its consumer's %v pending and %v acknowledging", b, value(pending), value(acking))
	}
}

func atLeast(n float64) func(float64) error {
	return func(v float64) error {
		if v < n {
			return fmt.Errorf("%v, want at least %v", v, n)
		}
		return nil
	}
}

func exactly(n float64) func(float64) error {
	return func(v float64) error {
		if v != n {
			return fmt.Errorf("%v, want %v", v, n)
		}
		return nil
	}
}
