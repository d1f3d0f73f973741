package cloud

import (
	"context"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/calx-iiot/calx/store"
)

// Metrics are the cloud's distributions, observed where the work happens;
// the counters are read from their owners at scrape time.
type Metrics struct {
	// HistorianWrite is the duration of one historian batch commit.
	HistorianWrite prometheus.Histogram
	// HistorianBatch is the number of values of one historian batch.
	HistorianBatch prometheus.Histogram
	// SampleDelay is, for each live value, the time from its sample
	// timestamp to its historian commit (the edge's clock against the
	// cloud's; values sent late from a buffer are not counted).
	SampleDelay prometheus.Histogram
}

func newMetrics() *Metrics {
	return &Metrics{
		HistorianWrite: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "calx_historian_write_seconds",
			Help:    "Duration of one historian batch commit.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}),
		HistorianBatch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "calx_historian_batch_values",
			Help:    "Values in one historian batch.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10)}),
		SampleDelay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "calx_historian_sample_delay_seconds",
			Help:    "Sample time to historian commit of each live value.",
			Buckets: prometheus.ExponentialBuckets(0.001, 1.25, 50)}), // 1 ms to 56 s, 25 % apart
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.HistorianWrite.Describe(ch)
	m.HistorianBatch.Describe(ch)
	m.SampleDelay.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.HistorianWrite.Collect(ch)
	m.HistorianBatch.Collect(ch)
	m.SampleDelay.Collect(ch)
}

// ConsumerLag is how far one durable backbone consumer is behind its stream.
type ConsumerLag struct {
	Stream   string `json:"stream"`
	Consumer string `json:"consumer"`
	// Pending are messages not yet delivered; AckPending delivered but not
	// yet acknowledged (in the consumer's hands).
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ack_pending"`
}

// ConsumerLags lists the lag of every consumer of the backbone's streams.
func (c *Cloud) ConsumerLags(ctx context.Context) ([]ConsumerLag, error) {
	if c.Bus == nil {
		return nil, nil
	}
	js := c.Bus.JetStream()
	var out []ConsumerLag
	for _, name := range []string{store.StreamSparkplug, store.StreamUNS} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return out, fmt.Errorf("stream %s: %w", name, err)
		}
		infos := s.ListConsumers(ctx)
		for info := range infos.Info() {
			out = append(out, ConsumerLag{Stream: name, Consumer: info.Name, Pending: info.NumPending, AckPending: info.NumAckPending})
		}
		if err := infos.Err(); err != nil {
			return out, fmt.Errorf("stream %s: consumers: %w", name, err)
		}
	}
	return out, nil
}
