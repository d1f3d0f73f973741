package main

import (
	"fmt"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/sink/postgres"
)

// openSinks prepares the far ends of cloud.yaml's sinks (they connect
// when they first write).
func openSinks(cfgs []cloud.SinkConfig) ([]cloud.Sink, func(), error) {
	var sinks []cloud.Sink
	var closers []func()
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, sc := range cfgs {
		o, err := sc.Postgres.Options()
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("sink %s: %w", sc.Name, err)
		}
		pg, err := postgres.Open(o)
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("sink %s: %w", sc.Name, err)
		}
		closers = append(closers, pg.Close)
		sinks = append(sinks, cloud.Sink{Name: sc.Name, Writer: pg})
	}
	return sinks, closeAll, nil
}
