package cloud

import (
	"errors"
	"fmt"
	"strings"
)

// RoleCustom is an MQTT account with its own publish and subscribe filters.
const RoleCustom = "custom"

// ValidFilter checks the syntax of an MQTT topic filter.
func ValidFilter(f string) error {
	if f == "" {
		return errors.New("empty filter")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return fmt.Errorf("filter %q: '#' must be the last level", f)
		case l != "#" && l != "+" && strings.ContainsAny(l, "#+"):
			return fmt.Errorf("filter %q: a wildcard must fill a whole level", f)
		}
	}
	return nil
}

// topicMatches reports whether a topic name matches a filter.
func topicMatches(filter, topic string) bool {
	fl, tl := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, f := range fl {
		if f == "#" {
			return true
		}
		if i >= len(tl) {
			return false
		}
		if f != "+" && f != tl[i] {
			return false
		}
	}
	return len(fl) == len(tl)
}

// filterCovers reports whether every topic the requested filter can match
// is also matched by the allowed filter.
func filterCovers(allowed, requested string) bool {
	al, rl := strings.Split(allowed, "/"), strings.Split(requested, "/")
	for i, a := range al {
		if a == "#" {
			return true
		}
		if i >= len(rl) {
			return false
		}
		r := rl[i]
		switch {
		case r == "#":
			return false
		case a == "+":
		case r == "+" || a != r:
			return false
		}
	}
	return len(al) == len(rl)
}

// customAllowed is the ACL of a RoleCustom user.
func customAllowed(u MQTTUser, topic string, write bool) bool {
	if write {
		for _, f := range u.Publish {
			if topicMatches(f, topic) {
				return true
			}
		}
		return false
	}
	for _, f := range u.Subscribe {
		if filterCovers(f, topic) {
			return true
		}
	}
	return false
}

// readerSees reports whether a reader with scope may subscribe to filter:
// without a scope to anything, with one to the uns/ topics under its
// prefixes only (not Sparkplug, not $SYS, not the rest of uns/).
func readerSees(scope []string, filter string) bool {
	if len(scope) == 0 {
		return true
	}
	for _, p := range scope {
		if filter == "uns/"+p || filterCovers("uns/"+p+"/#", filter) {
			return true
		}
	}
	return false
}
