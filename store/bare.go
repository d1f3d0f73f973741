package store

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/calx-iiot/calx/uns"
)

// BarePublishRate measures this machine's limit for the backbone: batches of
// perMsg samples, encoded as the host encodes them, published to a file
// stream of a new embedded JetStream in dir, with up to window
// acknowledgements outstanding, for about d. It returns the messages
// acknowledged and the time they took.
func BarePublishRate(ctx context.Context, dir string, d time.Duration, perMsg, window int) (int64, time.Duration, error) {
	bus, err := NewBus(Options{Dir: dir, Streams: []jetstream.StreamConfig{{Name: "BARE", Subjects: []string{"bare.>"}}}})
	if err != nil {
		return 0, 0, fmt.Errorf("bare publish: %w", err)
	}
	if err := bus.Start(ctx); err != nil {
		return 0, 0, fmt.Errorf("bare publish: %w", err)
	}
	defer bus.Shutdown()
	samples := make([]uns.Sample, perMsg)
	now := time.Now()
	for i := range samples {
		samples[i] = uns.Sample{Path: uns.Path(fmt.Sprintf("bench/site/area/line/edge/d/t%03d", i)), TS: now, Value: uns.Float(float64(i)), Quality: uns.Good}
	}
	payload := uns.AppendBatch(nil, samples)
	js, err := jetstream.New(bus.Conn(), jetstream.WithPublishAsyncMaxPending(window))
	if err != nil {
		return 0, 0, fmt.Errorf("bare publish: %w", err)
	}
	var acked int64
	start := time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		futures := make([]jetstream.PubAckFuture, 0, window)
		for range window {
			f, err := js.PublishAsync("bare.uns", payload)
			if err != nil {
				return acked, time.Since(start), fmt.Errorf("bare publish: %w", err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
				acked++
			case err := <-f.Err():
				return acked, time.Since(start), fmt.Errorf("bare publish: %w", err)
			case <-ctx.Done():
				return acked, time.Since(start), ctx.Err()
			}
		}
	}
	return acked, time.Since(start), nil
}
