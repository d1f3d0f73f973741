package uns

import (
	"strings"
	"time"
)

// The alarm journal's and the cycle table's rows: what the transforms
// make and the historian keeps (ISA-18.2 alarm states, production cycles).

// AlarmPath is the UNS path of a device's alarm: <device>/_alarms/<name>.
func AlarmPath(device, name string) string { return device + alarmsSegment + name }

// SplitAlarmPath splits an alarm's path into its device and name; ok is
// false for a path that names no alarm.
func SplitAlarmPath(p string) (device, name string, ok bool) {
	i := strings.LastIndex(p, alarmsSegment)
	if i < 0 {
		return "", "", false
	}
	return p[:i], p[i+len(alarmsSegment):], true
}

const alarmsSegment = "/_alarms/"

// Priorities, most urgent last.
var Priorities = []string{"low", "medium", "high", "urgent"}

// AlarmState is where an alarm is in the ISA-18.2 state model.
type AlarmState string

// The states: normal; active and unacknowledged; active and acknowledged;
// returned to normal (cleared) but unacknowledged.
const (
	StateNormal       AlarmState = "normal"
	StateUnacked      AlarmState = "active_unacked"
	StateAcked        AlarmState = "active_acked"
	StateClearedUnack AlarmState = "cleared_unacked"
)

// Alarm events, as journaled.
const (
	EventRaise    = "raise"
	EventClear    = "clear"
	EventAck      = "ack"
	EventShelve   = "shelve"
	EventUnshelve = "unshelve"
	// Suppression by design began or ended.
	EventSuppress   = "suppress"
	EventUnsuppress = "unsuppress"
)

// AlarmEvents lists the events, for checks and messages.
var AlarmEvents = []string{EventRaise, EventClear, EventAck, EventShelve, EventUnshelve, EventSuppress, EventUnsuppress}

// Transition is one change of an alarm, as the journal keeps it.
type Transition struct {
	Alarm    string     `json:"alarm"` // the alarm's UNS path: <device>/_alarms/<name>
	Tag      string     `json:"tag"`
	Kind     string     `json:"kind"`
	Priority string     `json:"priority"`
	Class    string     `json:"class,omitempty"`
	TS       time.Time  `json:"ts"`
	Event    string     `json:"event"`
	State    AlarmState `json:"state"` // after the event
	Value    *float64   `json:"value,omitempty"`
	Text     string     `json:"text,omitempty"` // a string value, or the message
	Limit    float64    `json:"limit"`
	User     string     `json:"user,omitempty"`
	Comment  string     `json:"comment,omitempty"`
	Shelved  *time.Time `json:"shelved_until,omitempty"`
}

// Cycle is a finished cycle of a machine.
type Cycle struct {
	Machine string             `json:"machine"` // the device's UNS path
	Name    string             `json:"name"`
	Start   time.Time          `json:"start"`
	End     time.Time          `json:"end"`
	Values  map[string]float64 `json:"values"` // aggregate name -> value; absent without a value
}

// Duration of the cycle.
func (c Cycle) Duration() time.Duration { return c.End.Sub(c.Start) }
