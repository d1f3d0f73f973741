package web

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/calx-iiot/calx/cloud"
)

// cloudCollector exposes the cloud's counters to Prometheus, read at scrape
// time from the components that own them.
type cloudCollector struct {
	c *cloud.Cloud
}

var (
	descBrokerClients   = prometheus.NewDesc("calx_broker_clients", "MQTT clients connected.", nil, nil)
	descBrokerReceived  = prometheus.NewDesc("calx_broker_messages_received_total", "MQTT messages received by the broker.", nil, nil)
	descBrokerDropped   = prometheus.NewDesc("calx_broker_messages_dropped_total", "MQTT messages the broker dropped for slow subscribers.", nil, nil)
	descPersisted       = prometheus.NewDesc("calx_ingest_persisted_total", "Sparkplug messages persisted to the backbone.", nil, nil)
	descPersistErrors   = prometheus.NewDesc("calx_ingest_persist_errors_total", "Sparkplug messages not persisted (not acknowledged).", nil, nil)
	descBadTopics       = prometheus.NewDesc("calx_ingest_bad_topics_total", "Publishes under spBv1.0/ with a malformed topic.", nil, nil)
	descAuthDenied      = prometheus.NewDesc("calx_broker_auth_denied_total", "Logins and topic accesses refused.", nil, nil)
	descBrokerRefused   = prometheus.NewDesc("calx_broker_connections_refused_total", "MQTT connections refused or ended by a limit, by the limit.", []string{"limit"}, nil)
	descRetainCleared   = prometheus.NewDesc("calx_broker_sparkplug_retain_cleared_total", "Sparkplug births, deaths and data sent retained, kept unretained.", nil, nil)
	descLoginThrottled  = prometheus.NewDesc("calx_broker_logins_throttled_total", "MQTT logins refused unchecked: too many failed logins from the address or for the user name.", nil, nil)
	descUplinkUp        = prometheus.NewDesc("calx_uplink_connected", "1 while the primary host is connected to the plant's broker (broker: in cloud.yaml).", nil, nil)
	descUplinkStored    = prometheus.NewDesc("calx_uplink_messages_stored_total", "Sparkplug messages taken from the plant's broker into the backbone.", nil, nil)
	descUplinkDups      = prometheus.NewDesc("calx_uplink_duplicates_total", "Messages the plant's broker delivered again (stored again, counted once for receipts).", nil, nil)
	descUplinkGaps      = prometheus.NewDesc("calx_uplink_gaps_total", "Edge sessions whose messages came from the plant's broker with a gap (the edge sends again).", nil, nil)
	descBrokerOpen      = prometheus.NewDesc("calx_broker_connections_open", "MQTT connections open, authenticated or not.", nil, nil)
	descBrokerAcceptErr = prometheus.NewDesc("calx_broker_accept_errors_total", "Failed accepts of the MQTT listener (each followed by a pause).", nil, nil)
	descHostMessages    = prometheus.NewDesc("calx_host_messages_total", "Sparkplug messages processed by the primary host.", nil, nil)
	descHostSamples     = prometheus.NewDesc("calx_host_values_total", "Values decoded by the primary host.", nil, nil)
	descHostMalformed   = prometheus.NewDesc("calx_host_malformed_payloads_total", "Sparkplug payloads rejected as malformed.", nil, nil)
	descHostGaps        = prometheus.NewDesc("calx_host_seq_gaps_total", "Sparkplug sequence gaps seen.", nil, nil)
	descHostRebirths    = prometheus.NewDesc("calx_host_rebirth_requests_total", "Rebirth requests sent to edge nodes.", nil, nil)
	descHostForeign     = prometheus.NewDesc("calx_host_foreign_claims_total", "Birth metrics refused for naming a UNS path of another edge node.", nil, nil)
	descHostOverCap     = prometheus.NewDesc("calx_host_tags_over_cap_total", "Birth metrics refused past their edge node's tag cap.", nil, nil)
	descArchWritten     = prometheus.NewDesc("calx_historian_values_written_total", "Values committed to the historian.", nil, nil)
	descArchPending     = prometheus.NewDesc("calx_historian_consumer_pending", "Backbone messages not yet written to the historian.", nil, nil)
	descArchLatency     = prometheus.NewDesc("calx_historian_last_latency_seconds", "Sample time to historian commit, newest value of the last batch.", nil, nil)
	descLiveDropped     = prometheus.NewDesc("calx_live_values_dropped_total", "Values not sent to slow live views.", nil, nil)
	descNodeOnline      = prometheus.NewDesc("calx_edge_online", "1 when the edge node is online.", []string{"group", "edge_node"}, nil)
	descNodeMalformed   = prometheus.NewDesc("calx_edge_malformed_payloads_total", "Malformed payloads per edge node.", []string{"group", "edge_node"}, nil)
	descNodeSeqGaps     = prometheus.NewDesc("calx_edge_seq_gaps_total", "Sequence gaps per edge node.", []string{"group", "edge_node"}, nil)
	descConsumerPending = prometheus.NewDesc("calx_backbone_consumer_pending", "Backbone messages not yet delivered to the consumer.", []string{"stream", "consumer"}, nil)
	descConsumerAcking  = prometheus.NewDesc("calx_backbone_consumer_ack_pending", "Backbone messages delivered to the consumer and not yet acknowledged.", []string{"stream", "consumer"}, nil)
	descEdgeHealth      = prometheus.NewDesc("calx_edge_health", "1 for the edge node's current health verdict (ok, degraded, down).", []string{"group", "edge_node", "verdict"}, nil)
	descEdgeBuffer      = prometheus.NewDesc("calx_edge_buffer_messages", "Messages in the edge node's store-and-forward buffer, as it last reported.", []string{"group", "edge_node"}, nil)
	descEdgeOldest      = prometheus.NewDesc("calx_edge_buffer_oldest_seconds", "Age of the edge node's oldest unsent value, as it last reported.", []string{"group", "edge_node"}, nil)
	descEdgeDropped     = prometheus.NewDesc("calx_edge_values_dropped_total", "Values the edge node dropped by its buffer bounds, as it last reported.", []string{"group", "edge_node"}, nil)
	descEdgeValues      = prometheus.NewDesc("calx_edge_values_received_total", "Device values received from the edge node.", []string{"group", "edge_node"}, nil)
	descLiveBusDropped  = prometheus.NewDesc("calx_live_messages_dropped_total", "Backbone messages the live feed was too slow to take.", nil, nil)
	descRepubSent       = prometheus.NewDesc("calx_uns_mqtt_values_total", "Current values published on the broker as UNS JSON.", nil, nil)
	descRepubDropped    = prometheus.NewDesc("calx_uns_mqtt_messages_dropped_total", "Backbone messages the UNS JSON republisher was too slow to take.", nil, nil)
	descRepubConflated  = prometheus.NewDesc("calx_uns_mqtt_values_conflated_total", "Values a newer value of the same tag replaced before the UNS JSON republisher's interval let them out.", nil, nil)
	descFleetAlarms     = prometheus.NewDesc("calx_fleet_alarms_active", "Active fleet alarms by kind.", []string{"kind"}, nil)
	descCalcOutputs     = prometheus.NewDesc("calx_transform_values_total", "Calculated values and cycle values the transforms produced.", nil, nil)
	descCalcFailed      = prometheus.NewDesc("calx_transform_failures_total", "Evaluations of calculated tags that failed.", nil, nil)
	descCalcLate        = prometheus.NewDesc("calx_transform_late_values_total", "Values older than what their device's transforms had processed (left out by those with state).", nil, nil)
	descCycles          = prometheus.NewDesc("calx_cycles_total", "Production cycles recorded.", nil, nil)
	descAlarmTrans      = prometheus.NewDesc("calx_alarm_transitions_total", "Alarm transitions journaled.", nil, nil)
	descAlarmsByState   = prometheus.NewDesc("calx_alarms", "Alarms by state and priority.", []string{"state", "priority"}, nil)
	descClusterNodes    = prometheus.NewDesc("calx_cluster_nodes", "The cloud's nodes as this one sees them, up or not (a cloud without a cluster is one node).", []string{"up"}, nil)
	descClusterQuorum   = prometheus.NewDesc("calx_cluster_quorum", "1 while this node's backbone can store messages (a majority of the cluster's nodes).", nil, nil)
	descUpdateServed    = prometheus.NewDesc("calx_update_chunks_served_total", "Pieces of edge builds served to edges on this node.", nil, nil)
	descUpdateRefused   = prometheus.NewDesc("calx_update_requests_refused_total", "Edges' requests for pieces of builds refused: malformed, or for no build kept.", nil, nil)
	descUpdateDropped   = prometheus.NewDesc("calx_update_requests_dropped_total", "Edges' requests for pieces of builds dropped: too many of one edge waiting (it asks again).", nil, nil)
	descSinkWritten     = prometheus.NewDesc("calx_sink_values_written_total", "Values a sink's far end committed (PostgreSQL...), on the node that feeds it.", []string{"sink"}, nil)
	descSinkFailures    = prometheus.NewDesc("calx_sink_write_failures_total", "Batches a sink's far end refused or did not answer (tried again; the backlog stays in the backbone).", []string{"sink"}, nil)
	descSinkFailing     = prometheus.NewDesc("calx_sink_failing", "1 while a sink's last write failed.", []string{"sink"}, nil)
	cloudCollectorDescs = []*prometheus.Desc{descSinkWritten, descSinkFailures, descSinkFailing, descUpdateServed, descUpdateRefused, descUpdateDropped, descClusterNodes, descClusterQuorum, descCalcLate, descCalcOutputs, descCalcFailed, descCycles, descAlarmTrans, descAlarmsByState, descConsumerPending, descConsumerAcking, descEdgeHealth, descEdgeBuffer, descEdgeOldest,
		descEdgeDropped, descEdgeValues, descFleetAlarms, descLiveBusDropped, descRepubSent, descRepubDropped, descRepubConflated, descBrokerClients, descBrokerReceived, descBrokerDropped, descPersisted, descPersistErrors,
		descBadTopics, descAuthDenied, descBrokerRefused, descRetainCleared, descLoginThrottled, descUplinkUp, descUplinkStored, descUplinkDups, descUplinkGaps, descBrokerOpen, descBrokerAcceptErr, descHostMessages, descHostSamples, descHostMalformed, descHostGaps, descHostRebirths, descHostForeign, descHostOverCap,
		descArchWritten, descArchPending, descArchLatency, descLiveDropped, descNodeOnline, descNodeMalformed, descNodeSeqGaps}
)

func (cc cloudCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range cloudCollectorDescs {
		ch <- d
	}
}

func (cc cloudCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	b := cc.c.Broker.Stats()
	gauge(descBrokerClients, float64(b.Clients))
	counter(descBrokerReceived, float64(b.Received))
	counter(descBrokerDropped, float64(b.Dropped))
	counter(descPersisted, float64(b.Persisted))
	counter(descPersistErrors, float64(b.PersistErrs))
	counter(descBadTopics, float64(b.Malformed))
	counter(descAuthDenied, float64(b.AuthDenied))
	for limit, n := range map[string]uint64{"max_connections": b.Listener.RefusedTotal, "max_connections_per_address": b.Listener.RefusedAddress,
		"connect_timeout": b.Listener.ConnectTimeouts, "max_connect_packet": b.Listener.BadFirstPacket,
		"max_packet_size": b.Limits.PacketsTooLarge, "max_sessions_per_account": b.Limits.SessionsRefused} {
		counter(descBrokerRefused, float64(n), limit)
	}
	gauge(descBrokerOpen, float64(b.Listener.Open))
	counter(descRetainCleared, float64(b.RetainCleared))
	counter(descLoginThrottled, float64(b.Logins.Throttled))
	if up := cc.c.UplinkStats(); up != (cloud.UplinkStats{}) {
		connected := 0.0
		if up.Connected {
			connected = 1
		}
		gauge(descUplinkUp, connected)
		counter(descUplinkStored, float64(up.Stored))
		counter(descUplinkDups, float64(up.Duplicates))
		counter(descUplinkGaps, float64(up.Gaps))
	}
	counter(descBrokerAcceptErr, float64(b.Listener.AcceptErrors))
	for _, sk := range cc.c.SinkStats() {
		counter(descSinkWritten, float64(sk.Written), sk.Name)
		counter(descSinkFailures, float64(sk.Failures), sk.Name)
		failing := 0.0
		if sk.LastError != "" {
			failing = 1
		}
		gauge(descSinkFailing, failing, sk.Name)
	}
	if cc.c.Updates != nil {
		us := cc.c.Updates.Stats()
		counter(descUpdateServed, float64(us.ChunksServed))
		counter(descUpdateRefused, float64(us.ChunksRefused))
		counter(descUpdateDropped, float64(us.RequestsDropped))
	}
	nodes := map[bool]int{}
	for _, n := range cc.c.Bus.Nodes() {
		nodes[n.Up]++
	}
	gauge(descClusterNodes, float64(nodes[true]), "true")
	gauge(descClusterNodes, float64(nodes[false]), "false")
	quorum := 0.0
	if cc.c.Bus.Quorum() {
		quorum = 1
	}
	gauge(descClusterQuorum, quorum)
	h := cc.c.Host.Stats()
	counter(descHostMessages, float64(h.Messages))
	counter(descHostSamples, float64(h.Samples))
	counter(descHostMalformed, float64(h.Malformed))
	counter(descHostGaps, float64(h.SeqGaps))
	counter(descHostRebirths, float64(h.RebirthsAsked))
	counter(descHostForeign, float64(h.ForeignClaims))
	counter(descHostOverCap, float64(h.OverTagCap))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	lags, _ := cc.c.ConsumerLags(ctx) // a stream not yet made has no consumers to show
	a := cc.c.ArchiverStatsFrom(lags)
	counter(descArchWritten, float64(a.Written))
	gauge(descArchPending, float64(a.Pending))
	gauge(descArchLatency, a.LastLatency.Seconds())
	counter(descLiveDropped, float64(cc.c.Hub.Dropped()))
	counter(descLiveBusDropped, float64(cc.c.Hub.BusDropped()))
	repSent, repConflated, repDropped := cc.c.RepublishStats()
	counter(descRepubSent, float64(repSent))
	counter(descRepubConflated, float64(repConflated))
	counter(descRepubDropped, float64(repDropped))
	ts := cc.c.TransformStats()
	counter(descCalcOutputs, float64(ts.Outputs))
	counter(descCalcFailed, float64(ts.Failed))
	counter(descCycles, float64(ts.Cycles))
	counter(descCalcLate, float64(ts.Late))
	counter(descAlarmTrans, float64(ts.Transitions))
	byState := map[[2]string]int{}
	alarms, _ := cc.c.Alarms(ctx) // in a cluster, asked of the node with the transforms
	for _, a := range alarms {
		byState[[2]string{string(a.State), a.Priority}]++
	}
	for k, n := range byState {
		gauge(descAlarmsByState, float64(n), k[0], k[1])
	}
	for _, l := range lags {
		gauge(descConsumerPending, float64(l.Pending), l.Stream, l.Consumer)
		gauge(descConsumerAcking, float64(l.AckPending), l.Stream, l.Consumer)
	}
	if cc.c.Health == nil {
		return
	}
	for _, e := range cc.c.Health.Edges(time.Now()) {
		online := 0.0
		if e.Online {
			online = 1
		}
		gauge(descNodeOnline, online, e.Group, e.Edge)
		counter(descNodeMalformed, float64(e.Malformed), e.Group, e.Edge)
		counter(descNodeSeqGaps, float64(e.SeqGaps), e.Group, e.Edge)
		for _, v := range []string{cloud.HealthOK, cloud.HealthDegraded, cloud.HealthDown} {
			is := 0.0
			if e.Verdict == v {
				is = 1
			}
			gauge(descEdgeHealth, is, e.Group, e.Edge, v)
		}
		gauge(descEdgeBuffer, float64(e.Buffer.Messages), e.Group, e.Edge)
		gauge(descEdgeOldest, e.Buffer.OldestUnsentSeconds, e.Group, e.Edge)
		counter(descEdgeDropped, float64(e.Buffer.Dropped), e.Group, e.Edge)
		counter(descEdgeValues, float64(e.Values), e.Group, e.Edge)
	}
	active, _ := cc.c.Health.Alarms()
	byKind := map[string]int{}
	for _, a := range active {
		kind, _, _ := strings.Cut(a.Kind, "/") // connector/<device>: one family of connector alarms
		byKind[kind]++
	}
	for _, kind := range []string{"offline", "stale", "connector", "buffer", "clock_skew", "config"} {
		gauge(descFleetAlarms, float64(byKind[kind]), kind)
	}
}

// httpMetrics times API and page requests by route. Live streams are left
// out: their duration is the viewer's, not the server's.
type httpMetrics struct {
	dur *prometheus.HistogramVec
}

func newHTTPMetrics() *httpMetrics {
	return &httpMetrics{dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "calx_http_request_duration_seconds",
		Help: "Duration of HTTP requests by route, method and status code.", Buckets: prometheus.DefBuckets},
		[]string{"route", "method", "code"})}
}

func (m *httpMetrics) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			next.ServeHTTP(w, r)
			return
		}
		began := time.Now()
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		next.ServeHTTP(ww, r)
		route := "unmatched"
		if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
			route = rc.RoutePattern()
		}
		code := ww.Status()
		if code == 0 {
			code = http.StatusOK
		}
		m.dur.WithLabelValues(route, r.Method, strconv.Itoa(code)).Observe(time.Since(began).Seconds())
	})
}

func metricsHandler(c *cloud.Cloud, hm *httpMetrics) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(cloudCollector{c}, c.Metrics, hm.dur, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
