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
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/connector"
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
	// Broker is tcp://host:1883 or ssl://host:8883; empty: the edge's own
	// broker (mqtt: in edge.yaml), where devices on site publish.
	Broker   string `yaml:"broker"`
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
	// Name may take parts of the topic: {1}, {2}, ... are the levels the
	// first, second, ... '+' of Topic matched, {#} what its '#' matched.
	// Such a tag stands for one tag per name it yields, each added to the
	// device when its first message arrives.
	Name  string `yaml:"name"`
	Topic string `yaml:"topic"` // may hold + and # wildcards
	// Path into a JSON payload; empty: the payload is the value itself.
	Path string `yaml:"path"`
	Type string `yaml:"type"` // float64 (default), int64, bool, string
	// Unit, scaling, report by exception (read only: writable is refused).
	connector.TagOptions `yaml:",inline"`
	// TimePath, when set, takes the value's timestamp from the payload
	// (RFC 3339), as LoRaWAN uplinks carry the time of reception.
	TimePath string `yaml:"time_path"`

	path, timePath jsonpath.Path
	dt             uns.DataType
	pattern        bool // Name takes parts of the topic
}

// placeholders lists the {N} and {#} of a tag name.
var placeholder = regexp.MustCompile(`\{([0-9]+|#)\}`)

// nameFor returns the tag name a topic gives a pattern tag.
func (t *Tag) nameFor(topic string) (string, error) {
	plus, rest := wildcards(t.Topic, topic)
	var err error
	name := placeholder.ReplaceAllStringFunc(t.Name, func(ph string) string {
		k := ph[1 : len(ph)-1]
		if k == "#" {
			return rest
		}
		i, _ := strconv.Atoi(k)
		if i < 1 || i > len(plus) {
			err = fmt.Errorf("%s: topic %s has no level for it", ph, topic)
			return ""
		}
		return plus[i-1]
	})
	if err != nil {
		return "", err
	}
	if err := uns.Path(name).Validate(); err != nil {
		return "", fmt.Errorf("topic %s gives tag name %q: %w", topic, name, err)
	}
	return name, nil
}

// wildcards returns the topic levels a filter's '+' matched, and what its
// '#' matched.
func wildcards(filter, topic string) (plus []string, rest string) {
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		switch {
		case i >= len(tl):
			return plus, rest
		case f == "+":
			plus = append(plus, tl[i])
		case f == "#":
			return plus, strings.Join(tl[i:], "/")
		}
	}
	return plus, rest
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
		Tag{Name: "rssi", Topic: s.Topic, Path: rssi, TimePath: timePath,
			TagOptions: connector.TagOptions{Unit: "dBm", Description: "Signal strength at the best gateway"}},
		Tag{Name: "snr", Topic: s.Topic, Path: snr, TimePath: timePath,
			TagOptions: connector.TagOptions{Unit: "dB", Description: "Signal to noise ratio at the best gateway"}})
	return nil
}

func init() {
	connector.RegisterSettings("mqtt", nil, New)
}

// Source is the MQTT-in connector of one device.
type Source struct {
	s      Settings
	device string
	log    *slog.Logger
	tls    *tls.Config
	topics map[string][]*Tag

	mu       sync.Mutex
	declared map[string]bool // names of pattern tags the edge knows
}

var _ connector.Connector = (*Source)(nil)

// New validates the settings.
func New(device string, s Settings, log *slog.Logger) (*Source, error) {
	var errs []error
	if err := s.expand(); err != nil {
		errs = append(errs, err)
	}
	if s.Broker != "" {
		u, err := config.BrokerURL(s.Broker)
		if err != nil {
			errs = append(errs, err)
		}
		s.Broker = u
	}
	if s.QoS > 2 {
		errs = append(errs, fmt.Errorf("qos %d: 0, 1 or 2", s.QoS))
	}
	if len(s.Tags) == 0 {
		errs = append(errs, errors.New("tags: at least one (or a preset with fields)"))
	}
	src := &Source{s: s, device: device, topics: map[string][]*Tag{}, declared: map[string]bool{}}
	seen := map[string]bool{}
	for i := range src.s.Tags {
		t := &src.s.Tags[i]
		at := fmt.Sprintf("tags[%d] (%s)", i, t.Name)
		if t.pattern = placeholder.MatchString(t.Name); t.pattern {
			// Check the name with every placeholder filled in.
			levels := strings.Count(t.Topic, "+")
			for _, ph := range placeholder.FindAllStringSubmatch(t.Name, -1) {
				if ph[1] == "#" && !strings.HasSuffix(t.Topic, "#") {
					errs = append(errs, fmt.Errorf("%s: name uses {#} but topic %q ends without #", at, t.Topic))
				} else if i, err := strconv.Atoi(ph[1]); err == nil && (i < 1 || i > levels) {
					errs = append(errs, fmt.Errorf("%s: name uses %s but topic %q has %d '+'", at, ph[0], t.Topic, levels))
				}
			}
			if err := uns.Path(placeholder.ReplaceAllString(t.Name, "x")).Validate(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
			}
		} else if err := uns.Path(t.Name).Validate(); err != nil {
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
		if err := t.Check(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		}
		if t.Writable {
			errs = append(errs, fmt.Errorf("%s: writable: the MQTT-in connector only reads", at))
		}
		if t.Interval != 0 {
			errs = append(errs, fmt.Errorf("%s: interval: MQTT-in takes messages as they come; use min_interval", at))
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
func (src *Source) Tags() []connector.TagDef {
	var out []connector.TagDef
	for i := range src.s.Tags {
		if t := &src.s.Tags[i]; !t.pattern {
			out = append(out, t.def(t.Name))
		}
	}
	return out
}

func (t *Tag) def(name string) connector.TagDef {
	return t.TagOptions.Def(name, t.dt)
}

// declare makes sure a tag that a pattern yields is known to the edge.
func (src *Source) declare(sink connector.Sink, t *Tag, name string) bool {
	src.mu.Lock()
	defer src.mu.Unlock()
	if src.declared[name] {
		return true
	}
	d, ok := sink.(connector.Declarer)
	if !ok {
		src.log.Warn("tag not added: this edge cannot add tags while running", "tag", name)
		return false
	}
	if err := d.Declare([]connector.TagDef{t.def(name)}); err != nil {
		src.log.Warn("tag not added", "tag", name, "err", err)
		return false
	}
	src.declared[name] = true
	return true
}

// Run connects, subscribes, and emits what the messages carry until ctx is
// done; the client reconnects by itself and subscribes again.
func (src *Source) Run(ctx context.Context, sink connector.Sink) error {
	var once sync.Once
	broker, user, pass := src.s.Broker, src.s.Username, src.s.Password
	if broker == "" {
		if l, ok := sink.(connector.LocalBrokerSink); ok {
			broker, user, pass = l.LocalBroker()
		}
		if broker == "" {
			err := fmt.Errorf("mqtt %s: no broker: set broker, or give the edge its own broker (mqtt: in edge.yaml)", src.device)
			sink.Lost(err)
			return err
		}
	}
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(src.s.ClientID).
		SetUsername(user).SetPassword(pass).SetCleanSession(true).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(2 * time.Second).
		SetMaxReconnectInterval(30 * time.Second).SetConnectTimeout(10 * time.Second).SetOrderMatters(false).
		// A pause before each reconnect: a broker still tearing down the
		// lost session (same client id) could otherwise drop the new
		// session's subscriptions with the old one's.
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
			time.Sleep(500*time.Millisecond + rand.N(500*time.Millisecond))
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			sink.Lost(fmt.Errorf("mqtt %s: %w", broker, err))
		}).
		SetOnConnectHandler(func(c paho.Client) {
			subs := map[string]byte{}
			for topic := range src.topics {
				subs[topic] = src.s.QoS
			}
			// Until the broker has the subscriptions, or this connection ends.
			for ctx.Err() == nil && c.IsConnectionOpen() {
				tok := c.SubscribeMultiple(subs, func(_ paho.Client, m paho.Message) { src.handle(m, sink) })
				var err error
				if !tok.WaitTimeout(10 * time.Second) {
					err = errors.New("no answer in 10 s")
				} else {
					err = tok.Error()
				}
				if err == nil {
					once.Do(func() { src.log.Info("subscribed", "broker", broker, "topics", len(subs)) })
					return
				}
				src.log.Warn("subscribe failed, trying again", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
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
func (src *Source) handle(m paho.Message, sink connector.Sink) {
	now := time.Now()
	var doc any
	parsed := false
	var rs []connector.Reading
	for filter, tags := range src.topics {
		if !matches(filter, m.Topic()) {
			continue
		}
		for _, t := range tags {
			name := t.Name
			if t.pattern {
				var err error
				if name, err = t.nameFor(m.Topic()); err != nil {
					src.log.Debug("message skipped", "tag", t.Name, "err", err)
					continue
				}
				if !src.declare(sink, t, name) {
					continue
				}
			}
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
			rs = append(rs, connector.Reading{Tag: name, TS: ts, Value: t.ToEng(v), Quality: q})
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
