package connector

import (
	"errors"
	"fmt"
	"log/slog"

	"go.yaml.in/yaml/v3"

	"github.com/calx-iiot/calx/config"
	"github.com/calx-iiot/calx/uns"
)

// Device binds a connector to a Sparkplug device id and a place in the UNS.
type Device struct {
	ID        string   // Sparkplug device id
	Path      uns.Path // UNS path of the machine, e.g. limeworks/namur/kilns/line1/kiln1
	Connector Connector
	// Spec identifies the configuration the connector was made from; a
	// config applied while running restarts the device only when it changed.
	Spec string
	// Template is the device's machine type; with SparkplugTemplates the
	// device goes on the wire as an instance of it (default: its id).
	Template string
}

// DeviceConfig binds a connector to a place in the UNS.
type DeviceConfig struct {
	ID        string    `yaml:"id"`
	Path      string    `yaml:"path"`
	Connector string    `yaml:"connector"`
	Settings  yaml.Node `yaml:"settings"`
	// Template names the device's machine type (set by the cloud's fleet
	// config); in Sparkplug template mode, its template definition.
	Template string `yaml:"template,omitempty"`
}

// BuildDevices makes the connectors of device configs; errors name the
// source (a file) and the device's key, e.g. devices[2].settings.
// log goes to the connectors (nil: discard).
func BuildDevices(source, key string, devs []DeviceConfig, log *slog.Logger) ([]Device, error) {
	var out []Device
	var errs []error
	for i, d := range devs {
		at := fmt.Sprintf("%s[%d]", key, i)
		f, err := Lookup(d.Connector)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s.connector: %w", source, at, err))
			continue
		}
		settings := d.Settings
		decode := func(v any) error {
			if settings.Kind == 0 {
				return nil
			}
			if err := config.DecodeNode(&settings, v); err != nil {
				return fmt.Errorf("%s: %s.settings: %w", source, at, err)
			}
			return nil
		}
		conn, err := f(d.ID, decode, log)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, Device{ID: d.ID, Path: uns.Path(d.Path), Connector: conn, Template: d.Template, Spec: d.Fingerprint()})
	}
	return out, errors.Join(errs...)
}

// Fingerprint tells two configs of a device apart: equal when connector,
// path and settings are.
func (d DeviceConfig) Fingerprint() string {
	b, _ := yaml.Marshal(&d.Settings)
	return d.Connector + "\x00" + d.Path + "\x00" + d.Template + "\x00" + string(b)
}
