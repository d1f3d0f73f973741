package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/calx-iiot/calx/uns"
)

// LocalBroker is the edge's own MQTT broker on site. Every value that
// passes report-by-exception is published on it, retained, as UNS JSON on
// uns/<path>, for consumers on site; devices on site publish their own
// topics to it, which the MQTT-in connector reads by default. uns/ is the
// edge's alone: clients may subscribe to it and never publish there. It is
// not on the path to the cloud, so a slow consumer here can lose updates
// (mochi counts them) but never a value of the historian.
type LocalBroker struct {
	srv *mqtt.Server
	tcp *listeners.TCP
	log *slog.Logger
}

// siteAccess lets any client on site connect, subscribe, and publish
// anywhere but under uns/.
type siteAccess struct{ mqtt.HookBase }

func (siteAccess) ID() string { return "calx-edge-site-access" }
func (siteAccess) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}
func (siteAccess) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }
func (siteAccess) OnACLCheck(_ *mqtt.Client, topic string, write bool) bool {
	return !write || topic != "uns" && !strings.HasPrefix(topic, "uns/")
}

// StartLocalBroker listens on addr.
func StartLocalBroker(addr string, log *slog.Logger) (*LocalBroker, error) {
	lb := &LocalBroker{log: log.With("component", "local-broker")}
	lb.srv = mqtt.New(&mqtt.Options{InlineClient: true, Logger: lb.log})
	if err := lb.srv.AddHook(&siteAccess{}, nil); err != nil {
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

// dialAddr is an address that reaches the broker from this machine.
func (lb *LocalBroker) dialAddr() string {
	host, port, err := net.SplitHostPort(lb.Addr())
	if err != nil {
		return lb.Addr()
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

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
