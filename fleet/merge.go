package fleet

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Merging settings over a template's and filling in ${param} placeholders.

// merge lays over onto base, without changing either.
func merge(base, over any) any {
	if over == nil {
		return clone(base)
	}
	bm, ok1 := base.(map[string]any)
	om, ok2 := over.(map[string]any)
	if ok1 && ok2 {
		out := clone(bm).(map[string]any)
		for k, v := range om {
			out[k] = merge(bm[k], v)
		}
		return out
	}
	bl, ok1 := base.([]any)
	ol, ok2 := over.([]any)
	if ok1 && ok2 && named(bl) && named(ol) {
		out := clone(bl).([]any)
		for _, o := range ol {
			name := o.(map[string]any)["name"]
			i := slices.IndexFunc(out, func(x any) bool { return x.(map[string]any)["name"] == name })
			if i < 0 {
				out = append(out, clone(o))
			} else {
				out[i] = merge(out[i], o)
			}
		}
		return out
	}
	return clone(over)
}

// named reports whether every item of a list is a mapping with a name.
func named(l []any) bool {
	for _, x := range l {
		m, ok := x.(map[string]any)
		if !ok || m["name"] == nil {
			return false
		}
	}
	return true
}

func clone(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = clone(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = clone(e)
		}
		return out
	case nil:
		return map[string]any{}
	}
	return v
}

var placeholder = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// substitute fills ${param} in every string. A string that is only a
// placeholder takes the parameter's value with its type (a number stays a
// number); else the value is written into the string.
func substitute(v any, params map[string]any) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		var errs []error
		for k, e := range x {
			s, err := substitute(e, params)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", k, err))
			}
			out[k] = s
		}
		return out, errors.Join(errs...)
	case []any:
		out := make([]any, len(x))
		var errs []error
		for i, e := range x {
			s, err := substitute(e, params)
			if err != nil {
				errs = append(errs, fmt.Errorf("[%d]: %w", i, err))
			}
			out[i] = s
		}
		return out, errors.Join(errs...)
	case string:
		if m := placeholder.FindStringSubmatch(x); m != nil && m[0] == x {
			p, ok := params[m[1]]
			if !ok {
				return x, fmt.Errorf("parameter %s has no value", m[1])
			}
			return p, nil
		}
		var missing []string
		s := placeholder.ReplaceAllStringFunc(x, func(ph string) string {
			name := ph[2 : len(ph)-1]
			p, ok := params[name]
			if !ok {
				missing = append(missing, name)
				return ph
			}
			return fmt.Sprint(p)
		})
		if len(missing) > 0 {
			return s, fmt.Errorf("parameter %s has no value", strings.Join(missing, ", "))
		}
		return s, nil
	}
	return v, nil
}
