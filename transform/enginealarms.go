package transform

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/calx-iiot/calx/uns"
)

// The alarm API of the engine: list, acknowledge, shelve.

// ErrNoAlarm is returned for an alarm path the engine does not have.
var ErrNoAlarm = errors.New("no such alarm")

func (e *Engine) alarm(path string) (*Alarm, error) {
	dev, _, ok := uns.SplitAlarmPath(path)
	if d, found := e.devices[dev]; ok && found {
		for _, a := range d.alarms {
			if a.Path == path {
				return a, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: %s", ErrNoAlarm, path)
}

// Ack acknowledges an alarm.
func (e *Engine) Ack(path string, now time.Time, user, comment string) (Transition, error) {
	a, err := e.alarm(path)
	if err != nil {
		return Transition{}, err
	}
	return a.Ack(now, user, comment)
}

// Shelve shelves an alarm until until (unshelves it when until is not
// after now).
func (e *Engine) Shelve(path string, now, until time.Time, user, comment string) (Transition, error) {
	a, err := e.alarm(path)
	if err != nil {
		return Transition{}, err
	}
	return a.Shelve(now, until, user, comment), nil
}

// AlarmStatus is an alarm as a list shows it.
type AlarmStatus struct {
	Path         string     `json:"path"`
	Device       string     `json:"device"`
	Name         string     `json:"name"`
	Tag          string     `json:"tag"`
	Kind         string     `json:"kind"`
	Priority     string     `json:"priority"`
	Class        string     `json:"class,omitempty"`
	Message      string     `json:"message,omitempty"`
	Limit        float64    `json:"limit"`
	State        AlarmState `json:"state"`
	Since        *time.Time `json:"since,omitempty"`
	Value        *float64   `json:"value,omitempty"`
	Text         string     `json:"text,omitempty"`
	ShelvedUntil *time.Time `json:"shelved_until,omitempty"`
	Suppressed   bool       `json:"suppressed,omitempty"` // by design: see AlarmDef.SuppressWhen
}

// Alarms lists every alarm, in path order.
func (e *Engine) Alarms(now time.Time) []AlarmStatus {
	var out []AlarmStatus
	for _, d := range e.sortedDevices() {
		for _, a := range d.alarms {
			st := AlarmStatus{Path: a.Path, Device: d.path, Name: a.Def.Name, Tag: a.Def.Tag, Kind: a.Def.Kind,
				Priority: a.Def.Priority, Class: a.Def.Class, Message: a.Def.Message, Limit: a.Def.Limit, State: a.State(), Text: a.Text,
				Suppressed: a.Suppressed}
			if !a.Since.IsZero() {
				t := a.Since
				st.Since = &t
			}
			if a.HasValue && a.Text == "" {
				v := a.Value
				st.Value = &v
			}
			if a.Shelved(now) {
				t := a.ShelvedUntil
				st.ShelvedUntil = &t
			}
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
