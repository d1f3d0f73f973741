package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/calx-iiot/calx/uns"
)

// LocalBroker is the edge's own MQTT broker for consumers on site: every
// value that passes report-by-exception is published, retained, as UNS JSON
// on uns/<path>. Clients may subscribe and never publish; it is not on the
// path to the cloud, so a slow consumer here can lose updates (mochi counts
// them) but never a value of the historian.
type LocalBroker struct {
	srv *mqtt.Server
	tcp *listeners.TCP
	log *slog.Logger
}

// readOnly lets any client connect and subscribe, and refuses publishes.
type readOnly struct{ mqtt.HookBase }

func (readOnly) ID() string { return "calx-edge-read-only" }
func (readOnly) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}
func (readOnly) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (readOnly) OnACLCheck(_ *mqtt.Client, _ string, write bool) bool    { return !write }

// StartLocalBroker listens on addr.
func StartLocalBroker(addr string, log *slog.Logger) (*LocalBroker, error) {
	lb := &LocalBroker{log: log.With("component", "local-broker")}
	lb.srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: lb.log})
	if err := lb.srv.AddHook(&readOnly{}, nil); err != nil {
		return nil, err
	}
	lb.tcp = listeners.NewTCP(listeners.Config{ID: "uns", Address: addr})
	if err := lb.srv.AddListener(lb.tcp); err != nil {
		return nil, fmt.Errorf("edge mqtt %s: %w", addr, err)
	}
	if err := lb.srv.Serve(); err != nil {
		return nil, fmt.Errorf("edge mqtt %s: %w", addr, err)
	}
	return lb, nil
}

// Addr is the address the broker listens on.
func (lb *LocalBroker) Addr() string { return lb.tcp.Address() }

// unsJSON is the UNS payload on MQTT.
type unsJSON struct {
	Value   any    `json:"value"`
	TS      string `json:"ts"`
	Quality string `json:"quality"`
	Unit    string `json:"unit,omitempty"`
}

func (lb *LocalBroker) publish(m *metric, s uns.Sample) {
	b, err := json.Marshal(unsJSON{Value: s.Value.Any(), TS: s.TS.UTC().Format(time.RFC3339Nano), Quality: s.Quality.String(), Unit: m.def.Unit})
	if err == nil {
		err = lb.srv.Publish("uns/"+string(s.Path), b, true, 0)
	}
	if err != nil {
		lb.log.Warn("UNS publish failed", "path", s.Path, "err", err)
	}
}

// Close stops the broker.
func (lb *LocalBroker) Close() error { return lb.srv.Close() }
