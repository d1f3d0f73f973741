package transform

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/calx-iiot/calx/uns"
)

// CalcDef is a calculated tag of a device: Expr (expr-lang) reads the
// device's other tags by name, e.g. "power_kw * 1000 / max(production_tph, 0.1)".
// Besides expr-lang's own functions it has functions of time, each keeping
// its state from one evaluation to the next:
//
//	integral(x)             x integrated over time in hours (kWh from kW), trapezoid rule
//	integral(x, "s")        the same in seconds ("min" and "h" too)
//	rate(x)                 change of x per second since its previous value
//	rate(x, "1m")           change of x per second over the last minute
//	avg_over(x, "1h")       time-weighted average of x over the last hour
//	                        (uncertain while less than MinCoverage of the hour has values)
//	min_over(x, "1h"), max_over(x, "1h")
//	convert(x, "degC", "degF") unit conversion
type CalcDef struct {
	Name        string `yaml:"name" json:"name"`
	Expr        string `yaml:"expr" json:"expr"`
	Unit        string `yaml:"unit" json:"unit"`
	Description string `yaml:"description" json:"description"`
}

// timeFuncs are the functions with state; each call site has its own.
var timeFuncs = []string{"integral", "rate", "avg_over", "min_over", "max_over"}

// site is the state of one call of a function of time in an expression.
type site struct {
	Fn       string        `json:"fn"`
	Window   time.Duration `json:"window"`
	Per      float64       `json:"per"` // integral: seconds per unit of time
	Integral *Integral     `json:"integral,omitempty"`
	Rate     *Rate         `json:"rate,omitempty"`
	Win      *Window       `json:"win,omitempty"`
}

func (s *site) brk(ts time.Time) {
	switch {
	case s.Integral != nil:
		s.Integral.Break(ts)
	case s.Rate != nil:
		s.Rate.Break()
	case s.Win != nil:
		s.Win.Break(ts)
	}
}

// calc is a compiled calculated tag with its state.
type calc struct {
	Def    CalcDef           `json:"def"`
	Out    uns.Path          `json:"out"`
	Inputs map[string]string `json:"inputs"` // identifier -> tag name of the device
	Sites  []*site           `json:"sites"`
	Last   time.Time         `json:"last"` // of the last evaluation

	prog      *vm.Program
	now       time.Time // of the evaluation under way
	bad       bool      // a function of time had no value
	uncertain bool      // a window held values for less than MinCoverage of its span
}

// MinCoverage is the share of its span a rolling window must hold values
// for before its average, lowest and highest value count as good; until
// then (the first hour of an hourly average, or after a gap) they are
// uncertain.
const MinCoverage = 0.75

// compileCalc compiles a calculated tag of the device at path.
func compileCalc(device string, d CalcDef) (*calc, error) {
	c := &calc{Def: d, Out: uns.Path(device + "/" + d.Name), Inputs: map[string]string{}}
	if err := c.Out.Validate(); err != nil {
		return nil, err
	}
	names, err := identifiers(d.Expr)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		c.Inputs[n] = n
	}
	p := &sitePatcher{c: c, done: map[*ast.CallNode]bool{}}
	opts := []expr.Option{expr.AllowUndefinedVariables(), expr.Patch(p)}
	for _, name := range timeFuncs {
		opts = append(opts, expr.Function(name, c.call(name)))
	}
	opts = append(opts, expr.Function("convert", func(args ...any) (any, error) {
		if len(args) != 3 {
			return nil, fmt.Errorf("convert(x, from, to): %d arguments", len(args))
		}
		x, ok := toFloat(args[0])
		from, ok1 := args[1].(string)
		to, ok2 := args[2].(string)
		if !ok || !ok1 || !ok2 {
			return nil, fmt.Errorf("convert(x, from, to): x a number, from and to unit names")
		}
		return Convert(x, from, to)
	}))
	prog, err := expr.Compile(d.Expr, opts...)
	if err != nil {
		return nil, err
	}
	if p.err != nil {
		return nil, p.err
	}
	c.prog = prog
	return c, nil
}

// Check compiles a calculated tag's expression, for config validation.
func (d CalcDef) Check() error {
	_, err := compileCalc("device", d)
	return err
}

// sitePatcher gives every call of a function of time its own state: it
// puts the call's index first among the call's arguments and reads the
// window or time unit, which must be a constant string.
type sitePatcher struct {
	c    *calc
	done map[*ast.CallNode]bool
	err  error
}

func (p *sitePatcher) Visit(n *ast.Node) {
	call, ok := (*n).(*ast.CallNode)
	if !ok || p.done[call] {
		return
	}
	id, ok := call.Callee.(*ast.IdentifierNode)
	if !ok || !slices.Contains(timeFuncs, id.Value) {
		return
	}
	p.done[call] = true
	s := &site{Fn: id.Value}
	arg := func(i int) (string, bool) {
		if i >= len(call.Arguments) {
			return "", false
		}
		str, ok := call.Arguments[i].(*ast.StringNode)
		if !ok {
			return "", false
		}
		return str.Value, true
	}
	var err error
	switch id.Value {
	case "integral":
		s.Per = 3600
		if u, ok := arg(1); ok {
			s.Per = map[string]float64{"s": 1, "min": 60, "h": 3600}[u]
			if s.Per == 0 {
				err = fmt.Errorf("integral(x, %q): the unit of time is s, min or h", u)
			}
		} else if len(call.Arguments) > 1 {
			err = fmt.Errorf("integral(x, unit): the unit must be a constant string")
		}
		s.Integral = &Integral{}
	case "rate":
		s.Rate = &Rate{}
		if w, ok := arg(1); ok {
			s.Window, err = time.ParseDuration(w)
			s.Rate.Window = s.Window
		} else if len(call.Arguments) > 1 {
			err = fmt.Errorf("rate(x, window): the window must be a constant string such as \"1m\"")
		}
	default:
		w, ok := arg(1)
		if !ok {
			err = fmt.Errorf("%s(x, window): the window must be a constant string such as \"1h\"", id.Value)
			break
		}
		if s.Window, err = time.ParseDuration(w); err == nil && s.Window <= 0 {
			err = fmt.Errorf("%s(x, %q): the window must be positive", id.Value, w)
		}
		s.Win = &Window{Span: s.Window}
	}
	if err != nil && p.err == nil {
		p.err = err
	}
	call.Arguments = append([]ast.Node{&ast.IntegerNode{Value: len(p.c.Sites)}}, call.Arguments...)
	p.c.Sites = append(p.c.Sites, s)
}

// errNoValue is what a function of time returns before it has a value: the
// calculated tag is bad then, not an error.
var errNoValue = fmt.Errorf("no value yet")

func (c *calc) call(name string) func(args ...any) (any, error) {
	return func(args ...any) (any, error) {
		if len(args) < 2 {
			return nil, fmt.Errorf("%s: the value is missing", name)
		}
		i, ok := args[0].(int)
		if !ok || i < 0 || i >= len(c.Sites) {
			return nil, fmt.Errorf("%s: internal call site", name)
		}
		x, ok := toFloat(args[1])
		if !ok {
			return nil, fmt.Errorf("%s: %v is not a number", name, args[1])
		}
		s := c.Sites[i]
		switch name {
		case "integral":
			s.Integral.Add(c.now, x)
			return s.Integral.Sum / s.Per, nil
		case "rate":
			r, ok := s.Rate.Add(c.now, x)
			if !ok {
				c.bad = true
				return 0.0, nil
			}
			return r, nil
		}
		s.Win.Add(c.now, x)
		avg, lo, hi, cov, ok := s.Win.Covered(c.now)
		if !ok {
			c.bad = true
			return 0.0, nil
		}
		if cov < MinCoverage {
			c.uncertain = true
		}
		switch name {
		case "min_over":
			return lo, nil
		case "max_over":
			return hi, nil
		}
		return avg, nil
	}
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// eval computes the tag at ts from the latest values of its inputs (by
// tag name); an input missing or bad makes it bad, and breaks the
// functions of time (a gap is not integrated). A bad result comes with the
// reason.
func (c *calc) eval(ts time.Time, historical bool, latest func(string) (uns.Sample, bool)) (out uns.Sample, reason string, err error) {
	out = uns.Sample{Path: c.Out, TS: ts, Historical: historical, Value: uns.Null, Quality: uns.Bad}
	env := map[string]any{}
	q := uns.Good
	for _, name := range slices.Sorted(maps.Keys(c.Inputs)) {
		in, ok := latest(c.Inputs[name])
		f, num := in.Value.AsFloat()
		switch {
		case !ok:
			reason = "input " + name + " has no value yet"
		case in.Quality == uns.Bad:
			reason = "input " + name + " is bad"
		case !num:
			reason = "input " + name + " is not a number"
		case math.IsNaN(f) || math.IsInf(f, 0):
			reason = "input " + name + " is not a finite number"
		}
		if reason != "" {
			for _, s := range c.Sites {
				s.brk(ts)
			}
			c.Last = ts
			return out, reason, nil
		}
		if in.Quality == uns.Uncertain {
			q = uns.Uncertain
		}
		env[name] = f
	}
	c.now, c.bad, c.uncertain = ts, false, false
	r, err := expr.Run(c.prog, env)
	c.Last = ts
	if err != nil {
		return out, "the expression failed: " + err.Error(), fmt.Errorf("%s: %w", c.Out, err)
	}
	f, ok := toFloat(r)
	switch {
	case !ok:
		return out, fmt.Sprintf("the expression gave %T, not a number", r), fmt.Errorf("%s: the expression gave %T, not a number", c.Out, r)
	case math.IsNaN(f) || math.IsInf(f, 0):
		return out, "the expression gave no finite number (a division by zero?)", nil
	case c.bad:
		return out, "a function of time has no value yet", nil
	}
	if c.uncertain {
		q = uns.Uncertain
	}
	out.Value, out.Quality = uns.Float(f), q
	return out, "", nil
}
