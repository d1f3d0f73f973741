package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ResumeConsumer creates the durable pull consumer cfg on stream, or opens
// it again, so that it goes on from its acknowledgement floor.
//
// Calx consumers acknowledge a whole fetched batch with one AckAll. Messages
// that were delivered before a stop or a crash but never acknowledged would
// otherwise wait out the ack wait for redelivery, and the first AckAll of
// the next run, for later messages, would cover them: they would never be
// processed. So when a consumer is found with deliveries above its ack floor,
// it is made again to deliver from the message after the floor. What was
// already processed comes again; the consumers' ends are idempotent.
func ResumeConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	cons, err := js.Consumer(ctx, stream, cfg.Durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		cons, err = js.CreateConsumer(ctx, stream, cfg)
		if err != nil {
			return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
		}
		return cons, nil
	case err != nil:
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	info := cons.CachedInfo()
	if info.Delivered.Stream <= info.AckFloor.Stream {
		// Nothing in flight: keep the position, take the rest of cfg.
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = info.Config.DeliverPolicy, info.Config.OptStartSeq, info.Config.OptStartTime
		cons, err = js.CreateOrUpdateConsumer(ctx, stream, cfg)
		if err != nil {
			return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
		}
		return cons, nil
	}
	if err := js.DeleteConsumer(ctx, stream, cfg.Durable); err != nil {
		return nil, fmt.Errorf("consumer %s on %s: reset to ack floor %d: %w", cfg.Durable, stream, info.AckFloor.Stream, err)
	}
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, info.AckFloor.Stream+1, nil
	cons, err = js.CreateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: resume at %d: %w", cfg.Durable, stream, info.AckFloor.Stream+1, err)
	}
	return cons, nil
}
