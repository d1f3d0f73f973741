// Package edge is the Calx edge runtime: it runs connectors, applies
// report-by-exception to what they read, and publishes the result as a
// Sparkplug B edge node. Each connector lives in its own sub-folder and
// registers itself with package connector, whose contract it implements;
// connectors do not import the runtime.
//
// It owns the edge node's Sparkplug state (bdSeq, seq, aliases, births); it
// must not reach into the cloud's packages.
package edge

import (
	"log/slog"

	"github.com/calx-iiot/calx/connector"
)

// The connector contract lives in package connector, which the fleet model
// and the connectors use; these names keep it at hand for the runtime.
type (
	TagDef          = connector.TagDef
	TagOptions      = connector.TagOptions
	Reading         = connector.Reading
	Sink            = connector.Sink
	Declarer        = connector.Declarer
	LocalBrokerSink = connector.LocalBrokerSink
	DirSink         = connector.DirSink
	Connector       = connector.Connector
	Writer          = connector.Writer
	Factory         = connector.Factory
	Device          = connector.Device
	DeviceConfig    = connector.DeviceConfig
)

// Register, Lookup and BuildDevices are the connector registry's.
var (
	Register     = connector.Register
	Lookup       = connector.Lookup
	BuildDevices = connector.BuildDevices
)

// RegisterSettings is connector.RegisterSettings.
func RegisterSettings[S any, C Connector](kind string, defaults func() S, build func(device string, s S, log *slog.Logger) (C, error)) {
	connector.RegisterSettings(kind, defaults, build)
}
