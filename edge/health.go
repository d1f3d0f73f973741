package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/calx-iiot/calx/guard"
)

// HealthServer serves the edge's /healthz, /readyz and /metrics.
type HealthServer struct {
	srv *http.Server
	ln  net.Listener
}

var (
	descRead     = prometheus.NewDesc("calx_edge_values_read_total", "Values read from connectors.", nil, nil)
	descFiltered = prometheus.NewDesc("calx_edge_values_filtered_total", "Values held back by report-by-exception.", nil, nil)
	descStored   = prometheus.NewDesc("calx_edge_values_buffered_total", "Values written to the store-and-forward buffer.", nil, nil)
	descSent     = prometheus.NewDesc("calx_edge_values_sent_total", "Values published (again after a reconnect, counted again).", nil, nil)
	descDropped  = prometheus.NewDesc("calx_edge_values_dropped_total", "Values dropped by a buffer bound or a failed buffer write.", nil, nil)
	descRestamp  = prometheus.NewDesc("calx_edge_values_restamped_total", "Values moved one millisecond after their tag's previous value, whose millisecond they shared.", nil, nil)
	descBufMsgs  = prometheus.NewDesc("calx_edge_buffer_messages", "Buffered messages not yet confirmed by the cloud.", nil, nil)
	descBufBytes = prometheus.NewDesc("calx_edge_buffer_bytes", "Bytes of the store-and-forward buffer.", nil, nil)
	descOldest   = prometheus.NewDesc("calx_edge_buffer_oldest_seconds", "Age of the oldest unconfirmed value.", nil, nil)
	descOnline   = prometheus.NewDesc("calx_edge_online", "1 when the edge node is connected and born.", nil, nil)
	descConn     = prometheus.NewDesc("calx_edge_connection_up", "1 when the device's connection works.", []string{"device"}, nil)
	descConnRd   = prometheus.NewDesc("calx_edge_connection_reads_total", "Reads the device's connector handed over.", []string{"device"}, nil)
	descConnErr  = prometheus.NewDesc("calx_edge_connection_errors_total", "Times the device was lost.", []string{"device"}, nil)
	descConnLat  = prometheus.NewDesc("calx_edge_connection_latency_seconds", "Duration of the device's last read cycle.", []string{"device"}, nil)
	descReceipt  = prometheus.NewDesc("calx_edge_receipt_delay_seconds", "Sample time to the cloud's receipt, of the newest value of the last receipt.", nil, nil)
	descConfig   = prometheus.NewDesc("calx_edge_config_version", "Version of the central configuration applied (0: the local file).", nil, nil)
	descRefused  = prometheus.NewDesc("calx_edge_config_refused_version", "Newest central configuration version refused (0: none).", nil, nil)
)

type edgeCollector struct{ e *Edge }

func (c edgeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRead, descFiltered, descStored, descSent, descDropped, descRestamp, descBufMsgs, descBufBytes, descOldest, descOnline,
		descConn, descConnRd, descConnErr, descConnLat, descReceipt, descConfig, descRefused} {
		ch <- d
	}
}

func (c edgeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.e.Stats()
	cnt := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	cnt(descRead, st.Read)
	cnt(descFiltered, st.Filtered)
	cnt(descStored, st.Stored)
	cnt(descSent, st.Sent)
	cnt(descDropped, st.Dropped)
	cnt(descRestamp, st.Restamped)
	gauge(descBufMsgs, float64(st.BufferedMsgs))
	gauge(descBufBytes, float64(st.BufferedBytes))
	gauge(descOldest, st.OldestUnconfirmed.Seconds())
	online := 0.0
	if c.e.Online() {
		online = 1
	}
	gauge(descOnline, online)
	gauge(descReceipt, time.Duration(c.e.node.receiptDelay.Load()).Seconds())
	cfg := c.e.ConfigStatus()
	gauge(descConfig, float64(cfg.Applied))
	gauge(descRefused, float64(cfg.Refused))
	for _, cs := range c.e.Connections() {
		up := 0.0
		if cs.Connected {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descConn, prometheus.GaugeValue, up, cs.Device)
		ch <- prometheus.MustNewConstMetric(descConnRd, prometheus.CounterValue, float64(cs.Reads), cs.Device)
		ch <- prometheus.MustNewConstMetric(descConnErr, prometheus.CounterValue, float64(cs.Errors), cs.Device)
		ch <- prometheus.MustNewConstMetric(descConnLat, prometheus.GaugeValue, cs.Latency.Seconds(), cs.Device)
	}
}

// StartHealth serves the edge's health and metrics on addr; with a token
// digest (guard.RequireToken), its status and metrics need the token.
func StartHealth(e *Edge, addr, tokenSHA256 string) (*HealthServer, error) {
	if err := guard.CheckTokenSHA256(tokenSHA256); err != nil {
		return nil, fmt.Errorf("edge http: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(edgeCollector{e}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"status": "ok", "version": e.opts.Version})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !e.Online() {
			reply(w, http.StatusServiceUnavailable, map[string]any{"status": "not connected to the cloud"})
			return
		}
		reply(w, http.StatusOK, map[string]any{"status": "ready"})
	})
	mux.Handle("GET /api/v1/status", guard.RequireToken(tokenSHA256, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, map[string]any{"edge": e.opts.Group + "/" + e.opts.EdgeID, "online": e.Online(),
			"stats": e.Stats(), "connections": e.Connections(), "config": e.ConfigStatus()})
	})))
	mux.Handle("GET /metrics", guard.RequireToken(tokenSHA256, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, map[string]string{"error": fmt.Sprintf("no such route: %s %s", r.Method, r.URL.Path)})
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("edge http %s: %w", addr, err)
	}
	ln = guard.LimitListener(ln, guard.NewCaps(256, 32, e.log))
	h := &HealthServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}, ln: ln}
	go func() {
		if err := h.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			e.log.Error("edge http stopped", "err", err)
		}
	}()
	return h, nil
}

// Addr is the address served.
func (h *HealthServer) Addr() string { return h.ln.Addr().String() }

// Shutdown stops the server.
func (h *HealthServer) Shutdown(ctx context.Context) error { return h.srv.Shutdown(ctx) }
