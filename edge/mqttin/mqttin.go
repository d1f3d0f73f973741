// Package mqttin is the MQTT-in connector: it subscribes to topics on a
// broker (a device's, a LoRaWAN network server's) and takes tag values out
// of JSON or plain payloads, with presets for the uplinks of ChirpStack v4
// and The Things Stack v3.
package mqttin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/calx-iiot/calx/edge"
	"github.com/calx-iiot/calx/edge/jsonpath"
	"github.com/calx-iiot/calx/uns"
)

// Presets for LoRaWAN network servers.
const (
	PresetChirpStack = "chirpstack" // ChirpStack v4 application integration, event "up"
	PresetTTS        = "ttn"        // The Things Stack v3 MQTT integration, uplink messages
)

// Settings of an MQTT source.
type Settings struct {
	Broker   string `yaml:"broker"` // tcp://host:1883 or ssl://host:8883
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	CAFile   string `yaml:"ca_file"`
	ClientID string `yaml:"client_id"`
	QoS      byte   `yaml:"qos"`
	// Preset reads LoRaWAN uplinks: the listed Fields of the decoded
	// payload become tags, with rssi and snr of the best gateway.
	Preset string   `yaml:"preset"`
	Topic  string   `yaml:"topic"`   // for a preset: the uplink topic (ttn), or derived from dev_eui (chirpstack)
	DevEUI string   `yaml:"dev_eui"` // chirpstack: the device
	Fields []string `yaml:"fields"`  // preset: decoded payload fields
	Tags   []Tag    `yaml:"tags"`
}

// Tag takes one value from the messages of a topic.
type Tag struct {
	Name  string `yaml:"name"`
	Topic string `yaml:"topic"` // may hold + and # wildcards
	// Path into a JSON payload; empty: the payload is the value itself.
	Path        string  `yaml:"path"`
	Type        string  `yaml:"type"` // float64 (default), int64, bool, string
	Unit        string  `yaml:"unit"`
	Deadband    float64 `yaml:"deadband"`
	Description string  `yaml:"description"`
	// TimePath, when set, takes the value's timestamp from the payload
	// (RFC 3339), as LoRaWAN uplinks carry the time of reception.
	TimePath string `yaml:"time_path"`

	path, timePath jsonpath.Path
	dt             uns.DataType
}

// expand turns a preset into tags.
func (s *Settings) expand() error {
	var prefix, rssi, snr, timePath string
	switch s.Preset {
	case "":
		return nil
	case PresetChirpStack:
		if s.Topic == "" {
			if s.DevEUI == "" {
				return errors.New("preset chirpstack: dev_eui or topic is required")
			}
			s.Topic = "application/+/device/" + strings.ToLower(s.DevEUI) + "/event/up"
		}
		prefix, rssi, snr, timePath = "object.", "rxInfo[0].rssi", "rxInfo[0].snr", "time"
	case PresetTTS:
		if s.Topic == "" {
			return errors.New("preset ttn: topic is required, e.g. v3/my-app@ttn/devices/my-device/up")
		}
		prefix, rssi, snr, timePath = "uplink_message.decoded_payload.", "uplink_message.rx_metadata[0].rssi",
			"uplink_message.rx_metadata[0].snr", "uplink_message.received_at"
	default:
		return fmt.Errorf("preset %q: want chirpstack or ttn", s.Preset)
	}
	if len(s.Fields) == 0 {
		return fmt.Errorf("preset %s: fields: list the decoded payload fields to read", s.Preset)
	}
	for _, f := range s.Fields {
		s.Tags = append(s.Tags, Tag{Name: f, Topic: s.Topic, Path: prefix + f, TimePath: timePath})
	}
	s.Tags = append(s.Tags,
		Tag{Name: "rssi", Topic: s.Topic, Path: rssi, Unit: "dBm", TimePath: timePath, Description: "Signal strength at the best gateway"},
		Tag{Name: "snr", Topic: s.Topic, Path: snr, Unit: "dB", TimePath: timePath, Description: "Signal to noise ratio at the best gateway"})
	return nil
}

func init() {
	edge.RegisterSettings("mqtt", nil, func(device string, s Settings) (*Source, error) { return New(device, s, nil) })
}

// Source is the MQTT-in connector of one device.
type Source struct {
	s      Settings
	device string
	log    *slog.Logger
	tls    *tls.Config
	topics map[string][]*Tag
}

var _ edge.Connector = (*Source)(nil)

// New validates the settings.
func New(device string, s Settings, log *slog.Logger) (*Source, error) {
	var errs []error
	if err := s.expand(); err != nil {
		errs = append(errs, err)
	}
	if !strings.HasPrefix(s.Broker, "tcp://") && !strings.HasPrefix(s.Broker, "ssl://") {
		errs = append(errs, fmt.Errorf("broker %q: want tcp://host:port or ssl://host:port", s.Broker))
	}
	if s.QoS > 2 {
		errs = append(errs, fmt.Errorf("qos %d: 0, 1 or 2", s.QoS))
	}
	if len(s.Tags) == 0 {
		errs = append(errs, errors.New("tags: at least one (or a preset with fields)"))
	}
	src := &Source{s: s, device: device, topics: map[string][]*Tag{}}
	seen := map[string]bool{}
	for i := range src.s.Tags {
		t := &src.s.Tags[i]
		at := fmt.Sprintf("tags[%d] (%s)", i, t.Name)
		if err := uns.Path(t.Name).Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
		if seen[t.Name] {
			errs = append(errs, fmt.Errorf("%s: name used twice", at))
		}
		seen[t.Name] = true
		if t.Topic == "" || strings.Contains(t.Topic, "#") && !strings.HasSuffix(t.Topic, "#") {
			errs = append(errs, fmt.Errorf("%s topic %q: a topic filter is required ('#' only at the end)", at, t.Topic))
		}
		var err error
		if t.Path != "" {
			if t.path, err = jsonpath.Parse(t.Path); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
			}
		}
		if t.TimePath != "" {
			if t.timePath, err = jsonpath.Parse(t.TimePath); err != nil {
				errs = append(errs, fmt.Errorf("%s time_path: %w", at, err))
			}
		}
		if t.Type == "" {
			t.Type = "float64"
		}
		if t.dt, err = uns.ParseDataType(t.Type); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
		src.topics[t.Topic] = append(src.topics[t.Topic], t)
	}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("ca_file: %w", err))
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("ca_file %s: no PEM certificate", s.CAFile))
			}
			src.tls = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("mqtt %s: %w", device, err)
	}
	if src.s.ClientID == "" {
		src.s.ClientID = "calx-" + strings.ReplaceAll(device, "/", "-")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	src.log = log.With("component", "mqtt-in", "device", device)
	return src, nil
}

// Tags declares the source's tags.
func (src *Source) Tags() []edge.TagDef {
	var out []edge.TagDef
	for _, t := range src.s.Tags {
		out = append(out, edge.TagDef{Name: t.Name, DataType: t.dt, Unit: t.Unit, Description: t.Description,
			Deadband: uns.Deadband{Abs: t.Deadband}})
	}
	return out
}

// Run connects, subscribes, and emits what the messages carry until ctx is
// done; the client reconnects by itself and subscribes again.
func (src *Source) Run(ctx context.Context, sink edge.Sink) error {
	var once sync.Once
	o := paho.NewClientOptions().AddBroker(src.s.Broker).SetClientID(src.s.ClientID).
		SetUsername(src.s.Username).SetPassword(src.s.Password).SetCleanSession(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(2 * time.Second).
		SetMaxReconnectInterval(30 * time.Second).SetOrderMatters(false).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			sink.Lost(fmt.Errorf("mqtt %s: %w", src.s.Broker, err))
		}).
		SetOnConnectHandler(func(c paho.Client) {
			subs := map[string]byte{}
			for topic := range src.topics {
				subs[topic] = src.s.QoS
			}
			tok := c.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) { src.handle(m, sink) })
			if tok.WaitTimeout(10*time.Second) && tok.Error() != nil {
				src.log.Warn("subscribe failed", "err", tok.Error())
			}
			once.Do(func() { src.log.Info("subscribed", "broker", src.s.Broker, "topics", len(subs)) })
		})
	if src.tls != nil {
		o.SetTLSConfig(src.tls)
	}
	c := paho.NewClient(o)
	c.Connect() // retries in the background until it connects
	<-ctx.Done()
	c.Disconnect(250)
	return nil
}

// handle turns one message into readings of the tags whose topic matches.
func (src *Source) handle(m paho.Message, sink edge.Sink) {
	now := time.Now()
	var doc any
	parsed := false
	var rs []edge.Reading
	for filter, tags := range src.topics {
		if !matches(filter, m.Topic()) {
			continue
		}
		for _, t := range tags {
			var v uns.Value
			var err error
			ts := now
			if t.path == nil {
				v, err = jsonpath.Value(strings.TrimSpace(string(m.Payload())), t.dt)
			} else {
				if !parsed {
					parsed = true
					if jerr := json.Unmarshal(m.Payload(), &doc); jerr != nil {
						doc = nil
					}
				}
				if doc == nil {
					err = errors.New("payload is not JSON")
				} else if x, lerr := t.path.Lookup(doc); lerr != nil {
					err = lerr
				} else {
					v, err = jsonpath.Value(x, t.dt)
				}
				if t.timePath != nil && doc != nil {
					if x, lerr := t.timePath.Lookup(doc); lerr == nil {
						if s, ok := x.(string); ok {
							if pt, perr := time.Parse(time.RFC3339Nano, s); perr == nil {
								ts = pt
							}
						}
					}
				}
			}
			q := uns.Good
			if err != nil {
				src.log.Debug("no value in message", "tag", t.Name, "topic", m.Topic(), "err", err)
				// A message that lacks this tag says nothing about it.
				continue
			}
			rs = append(rs, edge.Reading{Tag: t.Name, TS: ts, Value: v, Quality: q})
		}
	}
	if len(rs) > 0 {
		sink.Emit(rs)
	}
}

// matches reports whether a topic name matches a filter.
func matches(filter, topic string) bool {
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) || f != "+" && f != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}
