package cloud

import (
	"context"
	"fmt"
	"reflect"
	"slices"
)

// ReloadMQTTUsers puts the accounts of a reloaded config file in place of
// those of the last one. An account gone from the file, or changed in it
// (password, role, ACL), ends its sessions, so that the change holds at
// once; a changed password also drops one the API rotated before (the
// file is the newer word). Accounts made through the API stay, and a
// file's account of the same name as one of them is refused. Nothing
// changes unless every account is valid. It returns the names of the
// accounts added, changed or removed.
func (c *Cloud) ReloadMQTTUsers(ctx context.Context, users []MQTTUser) ([]string, error) {
	h := c.Broker.auth
	next := make(map[string]MQTTUser, len(users))
	for i, u := range users {
		if err := u.Validate(); err != nil {
			return nil, fmt.Errorf("mqtt account %d: %w", i+1, err)
		}
		if _, dup := next[u.Username]; dup {
			return nil, fmt.Errorf("mqtt account %q: named twice", u.Username)
		}
		next[u.Username] = u
	}
	h.umu.Lock()
	for name := range next {
		if h.fromAPI[name] {
			h.umu.Unlock()
			return nil, fmt.Errorf("mqtt account %q: made through the API already; delete it there first", name)
		}
	}
	var changed, newPassword []string
	for name, old := range h.users {
		if h.fromAPI[name] {
			continue
		}
		u, kept := next[name]
		switch {
		case !kept:
			delete(h.users, name)
			delete(h.disabled, name)
			changed = append(changed, name)
		case !reflect.DeepEqual(h.config[name], u):
			if h.config[name].PasswordHash != u.PasswordHash {
				newPassword = append(newPassword, name)
			} else {
				u.PasswordHash = old.PasswordHash // as rotated through the API, if it was
			}
			h.users[name] = u
			changed = append(changed, name)
		}
	}
	for name, u := range next {
		if _, ok := h.users[name]; !ok {
			h.users[name] = u
			changed = append(changed, name)
		}
	}
	h.config = next
	h.umu.Unlock()

	for _, name := range newPassword {
		st := c.currentState(ctx, name)
		if st.PasswordHash != "" {
			st.PasswordHash = ""
			if err := c.saveState(ctx, next[name], false, st); err != nil {
				c.log.Error("the password rotated before stays stored; the file's holds now", "username", name, "err", err)
			}
		}
	}
	slices.Sort(changed)
	for _, name := range changed {
		c.Broker.endSessions(name)
	}
	return changed, nil
}
