// Package sparkplug owns the Sparkplug B 3.0 wire format for Calx: topics,
// message types, and the mapping between Sparkplug metrics and UNS samples
// both ways (mapping.go: what an edge puts in births and data, what the
// host reads back).
// The protobuf types are generated into the sproto sub-package.
//
// It knows nothing about MQTT clients or brokers; the edge node and the
// primary host that use it live in edge/ and cloud/.
package sparkplug

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Namespace is the first topic level of Sparkplug B.
const Namespace = "spBv1.0"

// MsgType is a Sparkplug message type (NBIRTH, DDATA, ...).
type MsgType string

// Message types of Sparkplug B 3.0.
const (
	NBIRTH MsgType = "NBIRTH"
	NDEATH MsgType = "NDEATH"
	NDATA  MsgType = "NDATA"
	NCMD   MsgType = "NCMD"
	DBIRTH MsgType = "DBIRTH"
	DDEATH MsgType = "DDEATH"
	DDATA  MsgType = "DDATA"
	DCMD   MsgType = "DCMD"
	STATE  MsgType = "STATE"
)

// IsDevice reports whether the type addresses a device.
func (t MsgType) IsDevice() bool { return t == DBIRTH || t == DDEATH || t == DDATA || t == DCMD }

// ErrBadTopic is returned, wrapped with the reason, for a topic that is not a
// Sparkplug B topic.
var ErrBadTopic = errors.New("not a Sparkplug B topic")

// Topic is a parsed Sparkplug topic. For STATE, HostID is set and the other
// ids are empty.
type Topic struct {
	Group  string
	Type   MsgType
	Edge   string
	Device string
	HostID string
}

// String renders the MQTT topic.
func (t Topic) String() string {
	if t.Type == STATE {
		return Namespace + "/STATE/" + t.HostID
	}
	s := Namespace + "/" + t.Group + "/" + string(t.Type) + "/" + t.Edge
	if t.Device != "" {
		s += "/" + t.Device
	}
	return s
}

// ParseTopic parses an MQTT topic of the Sparkplug B namespace.
func ParseTopic(topic string) (Topic, error) {
	parts := strings.Split(topic, "/")
	if len(parts) < 3 || parts[0] != Namespace {
		return Topic{}, fmt.Errorf("%w: %q", ErrBadTopic, topic)
	}
	if parts[1] == "STATE" {
		if len(parts) != 3 || parts[2] == "" {
			return Topic{}, fmt.Errorf("%w: %q: STATE needs exactly one host id", ErrBadTopic, topic)
		}
		return Topic{Type: STATE, HostID: parts[2]}, nil
	}
	if len(parts) < 4 || len(parts) > 5 {
		return Topic{}, fmt.Errorf("%w: %q: want spBv1.0/group/TYPE/edge[/device]", ErrBadTopic, topic)
	}
	t := Topic{Group: parts[1], Type: MsgType(parts[2]), Edge: parts[3]}
	switch t.Type {
	case NBIRTH, NDEATH, NDATA, NCMD:
		if len(parts) != 4 {
			return Topic{}, fmt.Errorf("%w: %q: %s has no device id", ErrBadTopic, topic, t.Type)
		}
	case DBIRTH, DDEATH, DDATA, DCMD:
		if len(parts) != 5 {
			return Topic{}, fmt.Errorf("%w: %q: %s needs a device id", ErrBadTopic, topic, t.Type)
		}
		t.Device = parts[4]
	default:
		return Topic{}, fmt.Errorf("%w: %q: unknown message type %q", ErrBadTopic, topic, parts[2])
	}
	for _, id := range []string{t.Group, t.Edge, t.Device} {
		if strings.ContainsAny(id, "+#") {
			return Topic{}, fmt.Errorf("%w: %q: wildcard in id", ErrBadTopic, topic)
		}
	}
	if t.Group == "" || t.Edge == "" || (t.Type.IsDevice() && t.Device == "") {
		return Topic{}, fmt.Errorf("%w: %q: empty id", ErrBadTopic, topic)
	}
	return t, nil
}

// PeekSeq reads the seq field of a payload without decoding the rest.
func PeekSeq(b []byte) (uint64, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		if num == 3 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			return v, n >= 0
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
	}
	return 0, false
}

// Receipt is what the Calx cloud tells an edge node about its session: the
// number of the session's messages (births, data and deaths, in the order
// sent) that are durably stored, and the seq of the last of them. It is
// published on ReceiptTopic, a Calx topic outside the Sparkplug namespace.
type Receipt struct {
	BdSeq uint64 `json:"bdSeq"`
	Count uint64 `json:"count"`
	Seq   uint64 `json:"seq"`
}

// ReceiptTopic is where the Calx cloud publishes receipts for an edge node.
func ReceiptTopic(group, edge string) string { return "calx/receipt/" + group + "/" + edge }

// ConfigTopic is where the Calx cloud keeps, retained, the configuration an
// edge node is to run (YAML); only that edge node may read it.
func ConfigTopic(group, edge string) string { return ConfigPrefix + group + "/" + edge }

// ConfigPrefix starts every ConfigTopic.
const ConfigPrefix = "calx/config/"

// ConfigStatusTopic is where an edge node reports, retained, the
// configuration it runs and what it refused (JSON, ConfigStatus).
func ConfigStatusTopic(group, edge string) string { return ConfigStatusPrefix + group + "/" + edge }

// ConfigStatusPrefix starts every ConfigStatusTopic; ConfigStatusFilter
// matches them all.
const (
	ConfigStatusPrefix = "calx/config-status/"
	ConfigStatusFilter = ConfigStatusPrefix + "+/+"
)

// ConfigStatus is what an edge node reports of its configuration.
type ConfigStatus struct {
	Applied uint64    `json:"applied"`           // version running; 0: the local file's devices
	Refused uint64    `json:"refused,omitempty"` // the last version refused, if it is the newest seen
	Error   string    `json:"error,omitempty"`   // why it was refused
	At      time.Time `json:"at"`
}

// Edge software updates (docs/UPDATES.md): the cloud keeps, retained on
// UpdateTopic, the release an edge node is to run (JSON); the edge node asks
// for its build piece by piece on UpdateGetTopic and the cloud answers on
// UpdateChunkTopic. Only that edge node may use them.
const (
	UpdatePrefix      = "calx/update/"
	UpdateGetPrefix   = "calx/update-get/"
	UpdateChunkPrefix = "calx/update-chunk/"
	UpdateGetFilter   = UpdateGetPrefix + "+/+"
)

// UpdateTopic carries an edge node's assigned release.
func UpdateTopic(group, edge string) string { return UpdatePrefix + group + "/" + edge }

// UpdateGetTopic carries an edge node's requests for pieces of a build.
func UpdateGetTopic(group, edge string) string { return UpdateGetPrefix + group + "/" + edge }

// UpdateChunkTopic carries the pieces the cloud answers with.
func UpdateChunkTopic(group, edge string) string { return UpdateChunkPrefix + group + "/" + edge }
