package transform

import (
	"fmt"
	"strings"
)

// unit is a unit of a quantity: a value in it is v*Factor + Offset in the
// quantity's base unit.
type unit struct {
	quantity       string
	factor, offset float64
}

var units = map[string]unit{}

func init() {
	add := func(quantity string, factor, offset float64, names ...string) {
		for _, n := range names {
			units[n] = unit{quantity, factor, offset}
		}
	}
	add("temperature", 1, 273.15, "degC", "°C", "C")
	add("temperature", 5.0/9, 273.15-32*5.0/9, "degF", "°F", "F")
	add("temperature", 1, 0, "K")
	add("power", 1, 0, "W")
	add("power", 1e3, 0, "kW")
	add("power", 1e6, 0, "MW")
	add("power", 745.69987158227022, 0, "hp")
	add("energy", 1, 0, "J")
	add("energy", 1e3, 0, "kJ")
	add("energy", 1e6, 0, "MJ")
	add("energy", 1e9, 0, "GJ")
	add("energy", 3600, 0, "Wh")
	add("energy", 3.6e6, 0, "kWh")
	add("energy", 3.6e9, 0, "MWh")
	add("pressure", 1, 0, "Pa")
	add("pressure", 1e2, 0, "hPa")
	add("pressure", 1e3, 0, "kPa")
	add("pressure", 1e6, 0, "MPa")
	add("pressure", 1e5, 0, "bar")
	add("pressure", 1e2, 0, "mbar")
	add("pressure", 6894.757293168361, 0, "psi")
	add("mass", 1, 0, "kg")
	add("mass", 1e-3, 0, "g")
	add("mass", 1e3, 0, "t")
	add("mass", 0.45359237, 0, "lb")
	add("length", 1, 0, "m")
	add("length", 1e-3, 0, "mm")
	add("length", 1e-2, 0, "cm")
	add("length", 1e3, 0, "km")
	add("length", 0.0254, 0, "in")
	add("length", 0.3048, 0, "ft")
	add("time", 1, 0, "s")
	add("time", 60, 0, "min")
	add("time", 3600, 0, "h")
	add("time", 86400, 0, "d")
	add("volume flow", 1, 0, "m3/h", "m³/h", "Nm3/h", "Nm³/h")
	add("volume flow", 3600, 0, "m3/s", "m³/s")
	add("volume flow", 60e-3, 0, "l/min")
	add("mass flow", 1, 0, "kg/h")
	add("mass flow", 1e3, 0, "t/h")
	add("mass flow", 3600, 0, "kg/s")
	add("concentration", 1, 0, "mg/Nm3", "mg/Nm³", "mg/m3", "mg/m³")
	add("concentration", 1e3, 0, "g/Nm3", "g/Nm³", "g/m3", "g/m³")
	add("speed", 1, 0, "m/s")
	add("speed", 1/3.6, 0, "km/h")
	add("speed", 1.0/60, 0, "m/min")
	add("fraction", 1, 0, "1")
	add("fraction", 1e-2, 0, "%")
	add("fraction", 1e-6, 0, "ppm")
}

// lookup finds a unit by its symbol, or else by its symbol in any case
// when that is not ambiguous (MW and mW are not the same).
func lookup(name string) (unit, error) {
	if u, ok := units[name]; ok {
		return u, nil
	}
	var found []unit
	for n, u := range units {
		if strings.EqualFold(n, name) {
			found = append(found, u)
		}
	}
	if len(found) == 1 {
		return found[0], nil
	}
	return unit{}, fmt.Errorf("convert: unknown unit %q", name)
}

// Convert converts v from one unit to another of the same quantity.
func Convert(v float64, from, to string) (float64, error) {
	f, err := lookup(from)
	if err != nil {
		return 0, err
	}
	t, err := lookup(to)
	if err != nil {
		return 0, err
	}
	if f.quantity != t.quantity {
		return 0, fmt.Errorf("convert: %s is %s, %s is %s", from, f.quantity, to, t.quantity)
	}
	return (v*f.factor + f.offset - t.offset) / t.factor, nil
}
