// Package conformance judges Sparkplug B 3.0 traffic as a passive
// observer would: it is given every message seen on a broker (by a client
// subscribed to spBv1.0/#) and checks each against the assertions of the
// specification it can see on the wire, named by their TCK ids. It is
// written from the specification's text, apart from Calx's encoder and
// host, and holds no state of theirs: what it knows it learns from the
// messages. Results count, per assertion, the messages checked and those
// that broke it, with the first such as an example.
package conformance

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	pb "github.com/calx-iiot/calx/uns/sparkplug/sproto"
)

// Level is how strong an assertion is.
type Level string

// Levels of the specification's language.
const (
	Must   Level = "MUST"
	Should Level = "SHOULD"
)

// Assertion is one checked requirement.
type Assertion struct {
	ID    string // the TCK id (tck-id-...)
	Level Level
	Text  string
}

// Assertions are those the checker judges, in the order of the report.
var Assertions = []Assertion{
	{"topics-nbirth-seq-num", Must, "The NBIRTH MUST include a sequence number in the payload and it MUST have a value of 0."},
	{"topics-nbirth-timestamp", Must, "The NBIRTH MUST include a timestamp denoting the Date/Time the message was sent from the Edge Node."},
	{"topics-nbirth-bdseq-included", Must, "A bdSeq number as a metric MUST be included in the NBIRTH payload."},
	{"topics-nbirth-rebirth-metric", Must, "The NBIRTH message MUST include the metric 'Node Control/Rebirth'."},
	{"operational-behavior-data-commands-rebirth-datatype", Must, "The 'Node Control/Rebirth' metric in the NBIRTH message MUST have a datatype of 'Boolean'."},
	{"operational-behavior-data-commands-rebirth-value", Must, "The 'Node Control/Rebirth' metric in the NBIRTH message MUST have a value of false."},
	{"payloads-sequence-num-always-included", Must, "A sequence number MUST be included in the payload of every Sparkplug MQTT message except NDEATH messages."},
	{"payloads-sequence-num-incrementing", Must, "All subsequent messages MUST contain a sequence number that is continually increasing by one in each message until a value of 255 is reached; the one after is zero."},
	{"topics-ndeath-seq", Must, "NDEATH must not include a sequence number."},
	{"topics-ndeath-payload", Must, "NDEATH payload must only include a single metric, the bdSeq number."},
	{"topics-nbirth-bdseq-matching", Must, "The NDEATH's bdSeq MUST match the bdSeq of the NBIRTH of the session it ends."},
	{"principles-birth-certificates-order", Must, "Birth certificates must be first: no data, death or device birth of an Edge Node before its NBIRTH."},
	{"payloads-dbirth-order", Must, "DBIRTH must be sent before any DDATA of the device."},
	{"topics-dbirth-timestamp", Must, "DBIRTH must include a payload timestamp that denotes the time at which the message was published."},
	{"payloads-name-birth-data-requirement", Must, "The timestamp MUST be included with every metric in all NBIRTH, DBIRTH, NDATA, and DDATA messages."},
	{"payloads-metric-datatype-req", Must, "The datatype MUST be included with each metric definition in NBIRTH and DBIRTH messages."},
	{"payloads-alias-birth-requirement", Must, "NBIRTH and DBIRTH messages MUST include both a metric name and alias (when aliases are used)."},
	{"payloads-alias-data-cmd-requirement", Must, "NDATA, DDATA, NCMD, and DCMD messages MUST only include an alias and the metric name MUST be excluded (when aliases are used)."},
	{"payloads-alias-uniqueness", Must, "An alias supplied in an NBIRTH or DBIRTH MUST be unique across the Edge Node's entire set of metrics."},
	{"payloads-metric-datatype-not-req", Should, "The datatype SHOULD NOT be included with metric definitions in NDATA, NCMD, DDATA, and DCMD messages."},
	{"payloads-propertyset-keys-array-size", Must, "The array of keys in a PropertySet MUST contain the same number of values included in the array of PropertyValue objects."},
	{"payloads-template-instance-ref", Must, "A Template instance MUST include the name of the Template definition it is an instance of (template_ref), and is_definition false."},
	{"payloads-metrics-time-order", Must, "The metrics of a payload are in the order of their timestamps (as an independent checker read §6.4.6)."},
	{"payloads-nbirth-retain", Must, "NBIRTH, DBIRTH, NDATA, DDATA, NDEATH and DDEATH are published with the retained flag false (none is held retained by the broker)."},
	{"host-state-payload", Must, "The Primary Host's STATE message is JSON with an 'online' boolean and a 'timestamp', published retained."},
	{"host-state-death-timestamp", Must, "The STATE death (offline) of a Primary Host session carries the timestamp of that session's birth (online)."},
	{"host-ncmd-rebirth", Must, "A rebirth request is an NCMD with the metric 'Node Control/Rebirth' set to true."},
}

// Result is what the checker saw of one assertion.
type Result struct {
	Assertion
	Checked int
	Failed  int
	Example string // the first failure
}

// Verdict says pass, fail or not seen.
func (r Result) Verdict() string {
	switch {
	case r.Failed > 0 && r.Level == Should:
		return "deviates"
	case r.Failed > 0:
		return "FAIL"
	case r.Checked == 0:
		return "not seen"
	}
	return "pass"
}

// node is what the checker knows of one edge node.
type node struct {
	born    bool
	seq     int64 // of the last message, -1 unknown
	bdSeq   uint64
	aliased bool
	aliases map[uint64]string
	devices map[string]bool
}

// Checker judges messages; safe for concurrent use.
type Checker struct {
	mu      sync.Mutex
	results map[string]*Result
	nodes   map[string]*node
	states  map[string]uint64 // host id -> timestamp of its last online STATE
}

// New returns a checker with nothing seen.
func New() *Checker {
	c := &Checker{results: map[string]*Result{}, nodes: map[string]*node{}, states: map[string]uint64{}}
	for _, a := range Assertions {
		c.results[a.ID] = &Result{Assertion: a}
	}
	return c
}

func (c *Checker) check(id string, ok bool, format string, args ...any) {
	r := c.results[id]
	if r == nil {
		panic("conformance: no assertion " + id)
	}
	r.Checked++
	if !ok {
		r.Failed++
		if r.Example == "" {
			r.Example = fmt.Sprintf(format, args...)
		}
	}
}

// Observe judges one message as a subscriber received it; retained says
// the broker delivered it as a retained message.
func (c *Checker) Observe(topic string, payload []byte, retained bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	parts := strings.Split(topic, "/")
	if len(parts) < 3 || parts[0] != "spBv1.0" {
		return
	}
	if parts[1] == "STATE" {
		c.state(parts[2], payload, retained)
		return
	}
	if len(parts) < 4 {
		return
	}
	group, typ, edge := parts[1], parts[2], parts[3]
	device := ""
	if len(parts) > 4 {
		device = parts[4]
	}
	var p pb.Payload
	if err := proto.Unmarshal(payload, &p); err != nil {
		return
	}
	key := group + "/" + edge
	switch typ {
	case "NCMD", "DCMD":
		c.command(key, typ, &p)
		return
	}
	c.check("payloads-nbirth-retain", !retained, "%s delivered as a retained message", topic)
	if retained {
		return // an old message, not part of the live flow
	}
	n := c.nodes[key]
	if n == nil {
		n = &node{seq: -1, devices: map[string]bool{}, aliases: map[uint64]string{}}
		c.nodes[key] = n
	}
	if typ != "NDEATH" {
		c.check("payloads-sequence-num-always-included", p.Seq != nil, "%s without seq", topic)
	}
	switch typ {
	case "NBIRTH":
		c.nbirth(topic, n, &p)
		return
	case "NDEATH":
		c.check("topics-ndeath-seq", p.Seq == nil, "%s with seq %d", topic, p.GetSeq())
		ms := p.GetMetrics()
		c.check("topics-ndeath-payload", len(ms) == 1 && ms[0].GetName() == "bdSeq", "%s with %d metrics", topic, len(ms))
		if len(ms) == 1 && n.born {
			c.check("topics-nbirth-bdseq-matching", ms[0].GetLongValue() == n.bdSeq || uint64(ms[0].GetIntValue()) == n.bdSeq,
				"%s bdSeq %d, the NBIRTH's %d", topic, ms[0].GetLongValue(), n.bdSeq)
		}
		n.born = false
		return
	}
	c.check("principles-birth-certificates-order", n.born, "%s before an NBIRTH of the session", topic)
	if p.Seq != nil && n.seq >= 0 {
		c.check("payloads-sequence-num-incrementing", int64(p.GetSeq()) == (n.seq+1)%256, "%s seq %d after %d", topic, p.GetSeq(), n.seq)
	}
	if p.Seq != nil {
		n.seq = int64(p.GetSeq())
	}
	switch typ {
	case "DBIRTH":
		c.check("topics-dbirth-timestamp", p.Timestamp != nil, "%s without payload timestamp", topic)
		c.birthMetrics(topic, n, &p)
		n.devices[device] = true
	case "DDEATH":
		delete(n.devices, device)
	case "DDATA":
		c.check("payloads-dbirth-order", n.devices[device], "%s before the device's DBIRTH", topic)
		c.dataMetrics(topic, n, &p)
	case "NDATA":
		c.dataMetrics(topic, n, &p)
	}
}

func (c *Checker) nbirth(topic string, n *node, p *pb.Payload) {
	c.check("topics-nbirth-seq-num", p.Seq != nil && p.GetSeq() == 0, "%s seq %d", topic, p.GetSeq())
	c.check("topics-nbirth-timestamp", p.Timestamp != nil, "%s without payload timestamp", topic)
	var bd, rebirth *pb.Payload_Metric
	for _, m := range p.GetMetrics() {
		switch m.GetName() {
		case "bdSeq":
			bd = m
		case "Node Control/Rebirth":
			rebirth = m
		}
	}
	c.check("topics-nbirth-bdseq-included", bd != nil, "%s without bdSeq", topic)
	c.check("topics-nbirth-rebirth-metric", rebirth != nil, "%s without Node Control/Rebirth", topic)
	if rebirth != nil {
		c.check("operational-behavior-data-commands-rebirth-datatype", pb.DataType(rebirth.GetDatatype()) == pb.DataType_Boolean,
			"%s Node Control/Rebirth of datatype %d", topic, rebirth.GetDatatype())
		c.check("operational-behavior-data-commands-rebirth-value", !rebirth.GetBooleanValue(), "%s Node Control/Rebirth true", topic)
	}
	*n = node{born: true, seq: int64(p.GetSeq()), devices: map[string]bool{}, aliases: map[uint64]string{}}
	if bd != nil {
		n.bdSeq = bd.GetLongValue()
	}
	c.birthMetrics(topic, n, p)
}

// birthMetrics checks the metrics of a birth and learns its aliases.
func (c *Checker) birthMetrics(topic string, n *node, p *pb.Payload) {
	ms := p.GetMetrics()
	aliased := slices.ContainsFunc(ms, func(m *pb.Payload_Metric) bool { return m.Alias != nil })
	n.aliased = n.aliased || aliased
	for _, m := range ms {
		c.check("payloads-name-birth-data-requirement", m.Timestamp != nil, "%s metric %q without timestamp", topic, m.GetName())
		c.check("payloads-metric-datatype-req", m.Datatype != nil, "%s metric %q without datatype", topic, m.GetName())
		if aliased {
			c.check("payloads-alias-birth-requirement", m.Name != nil && m.Alias != nil, "%s metric %q without name or alias", topic, m.GetName())
		}
		if m.Alias != nil {
			prev, dup := n.aliases[m.GetAlias()]
			c.check("payloads-alias-uniqueness", !dup || prev == topic+"\x00"+m.GetName(), "%s alias %d of %q used before", topic, m.GetAlias(), m.GetName())
			n.aliases[m.GetAlias()] = topic + "\x00" + m.GetName()
		}
		c.properties(topic, m)
		if tv := m.GetTemplateValue(); tv != nil && !tv.GetIsDefinition() {
			c.check("payloads-template-instance-ref", tv.GetTemplateRef() != "" && tv.IsDefinition != nil, "%s instance %q without template_ref or is_definition", topic, m.GetName())
		}
	}
	c.timeOrder(topic, ms)
}

func (c *Checker) dataMetrics(topic string, n *node, p *pb.Payload) {
	ms := p.GetMetrics()
	for _, m := range ms {
		c.check("payloads-name-birth-data-requirement", m.Timestamp != nil, "%s metric without timestamp", topic)
		c.check("payloads-metric-datatype-not-req", m.Datatype == nil, "%s metric with datatype %d", topic, m.GetDatatype())
		if n.aliased && m.Alias != nil {
			c.check("payloads-alias-data-cmd-requirement", m.Name == nil, "%s metric %q with both name and alias", topic, m.GetName())
		}
		c.properties(topic, m)
		if tv := m.GetTemplateValue(); tv != nil {
			c.check("payloads-template-instance-ref", tv.GetTemplateRef() != "" && tv.IsDefinition != nil && !tv.GetIsDefinition(),
				"%s template instance without template_ref or is_definition", topic)
		}
	}
	c.timeOrder(topic, ms)
}

func (c *Checker) properties(topic string, m *pb.Payload_Metric) {
	if ps := m.GetProperties(); ps != nil {
		c.check("payloads-propertyset-keys-array-size", len(ps.GetKeys()) == len(ps.GetValues()), "%s metric %q: %d keys, %d values", topic, m.GetName(), len(ps.GetKeys()), len(ps.GetValues()))
	}
}

func (c *Checker) timeOrder(topic string, ms []*pb.Payload_Metric) {
	for i := 1; i < len(ms); i++ {
		if ms[i].Timestamp != nil && ms[i-1].Timestamp != nil {
			c.check("payloads-metrics-time-order", ms[i].GetTimestamp() >= ms[i-1].GetTimestamp(), "%s metric %d at %d after one at %d", topic, i, ms[i].GetTimestamp(), ms[i-1].GetTimestamp())
		}
	}
}

func (c *Checker) command(key, typ string, p *pb.Payload) {
	n := c.nodes[key]
	for _, m := range p.GetMetrics() {
		c.check("payloads-metric-datatype-not-req", m.Datatype == nil, "%s with datatype %d", typ, m.GetDatatype())
		if n != nil && n.aliased && m.Alias != nil {
			c.check("payloads-alias-data-cmd-requirement", m.Name == nil, "%s metric %q with both name and alias", typ, m.GetName())
		}
		if typ == "NCMD" && n != nil {
			name := m.GetName()
			if m.Name == nil && m.Alias != nil {
				name = strings.TrimPrefix(n.aliases[m.GetAlias()], "spBv1.0/")
				if _, after, ok := strings.Cut(name, "\x00"); ok {
					name = after
				}
			}
			if name == "Node Control/Rebirth" {
				c.check("host-ncmd-rebirth", m.GetBooleanValue(), "NCMD Node Control/Rebirth false")
			}
		}
	}
}

func (c *Checker) state(host string, payload []byte, retained bool) {
	var s struct {
		Online    *bool   `json:"online"`
		Timestamp *uint64 `json:"timestamp"`
	}
	err := json.Unmarshal(payload, &s)
	c.check("host-state-payload", err == nil && s.Online != nil && s.Timestamp != nil, "STATE of %s: %q", host, payload)
	if err != nil || s.Online == nil || s.Timestamp == nil {
		return
	}
	if *s.Online {
		c.states[host] = *s.Timestamp
		return
	}
	if born, ok := c.states[host]; ok && !retained {
		c.check("host-state-death-timestamp", *s.Timestamp == born, "STATE offline of %s at %d, its online at %d", host, *s.Timestamp, born)
	}
}

// ObserveRetained judges a retained STATE delivered at subscription (its
// retained flag is what a retained publish leaves on the broker).
func (c *Checker) ObserveRetained(topic string, retained bool) {
	if !strings.HasPrefix(topic, "spBv1.0/STATE/") {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.check("host-state-payload", retained, "%s not retained", topic)
}

// Results returns the results in the order of Assertions.
func (c *Checker) Results() []Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Result, 0, len(Assertions))
	for _, a := range Assertions {
		out = append(out, *c.results[a.ID])
	}
	return out
}

// Table writes results as a Markdown table.
func Table(rs []Result) string {
	var b strings.Builder
	b.WriteString("| assertion | level | verdict | checked | failed | first failure |\n|---|---|---|---|---|---|\n")
	for _, r := range rs {
		ex := strings.ReplaceAll(r.Example, "|", "\\|")
		ex = strings.ReplaceAll(ex, "\x00", " ")
		fmt.Fprintf(&b, "| `%s` | %s | %s | %d | %d | %s |\n", r.ID, r.Level, r.Verdict(), r.Checked, r.Failed, ex)
	}
	return b.String()
}
