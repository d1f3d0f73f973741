// Package all registers every connector kind Calx has (modbus, opcua,
// mqtt, rest, sim, signals, clock): the calx command and the tests that
// build devices from configs import it, and nothing else needs to know
// which connectors there are.
package all

import (
	_ "github.com/calx-iiot/calx/edge/modbus" // modbus
	_ "github.com/calx-iiot/calx/edge/mqttin" // mqtt
	_ "github.com/calx-iiot/calx/edge/opcua"  // opcua
	_ "github.com/calx-iiot/calx/edge/rest"   // rest
	_ "github.com/calx-iiot/calx/edge/sim"    // sim, signals, clock
)
