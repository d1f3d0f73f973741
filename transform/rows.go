package transform

import "github.com/calx-iiot/calx/uns"

// The journal's and cycles' row types live in the domain (uns), so that
// the historian that stores them need not link this engine.
type (
	AlarmState = uns.AlarmState
	Transition = uns.Transition
	Cycle      = uns.Cycle
)

// The states, events and priorities of alarms (uns).
const (
	StateNormal       = uns.StateNormal
	StateUnacked      = uns.StateUnacked
	StateAcked        = uns.StateAcked
	StateClearedUnack = uns.StateClearedUnack
	EventRaise        = uns.EventRaise
	EventClear        = uns.EventClear
	EventAck          = uns.EventAck
	EventShelve       = uns.EventShelve
	EventUnshelve     = uns.EventUnshelve
	EventSuppress     = uns.EventSuppress
	EventUnsuppress   = uns.EventUnsuppress
)

// Priorities and AlarmEvents (uns).
var (
	Priorities  = uns.Priorities
	AlarmEvents = uns.AlarmEvents
)
