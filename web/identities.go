package web

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// In a cluster, the users and API tokens made, changed or removed through
// one node's API hold on every node: each node takes the cloud's lists
// every identitySync and applies what another node changed (a changed user
// loses its sessions here too, as on the node that changed it). Sign-in
// sessions stay each node's own: a load balancer in front of the nodes
// keeps a browser on one node (docs/CLUSTER.md).

const identitySync = 2 * time.Second

// followIdentities keeps the users and tokens in step with the cloud's
// until the server stops.
func (s *Server) followIdentities() {
	s.every(identitySync, func(ctx context.Context) {
		if err := s.syncIdentities(ctx); err != nil {
			s.log.Warn("users and API tokens of the other nodes not taken", "err", err)
		}
	})
}

// syncIdentities applies the cloud's lists of users and tokens to auth.
// It holds identityMu, as the handlers that change them do, so that a
// change under way here is never undone by a list taken before it.
func (s *Server) syncIdentities(ctx context.Context) error {
	s.identityMu.Lock()
	defer s.identityMu.Unlock()
	us, err := s.c.users.UIUsers(ctx)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	kept := map[string]bool{}
	for _, cu := range us {
		u := User{Username: cu.Username, PasswordHash: cu.PasswordHash, Role: cu.Role, Scope: cu.Scope}
		kept[u.Username] = true
		cur, api, ok := s.auth.user(u.Username)
		if ok && (!api || sameUser(cur, u)) {
			continue // the config file's, or unchanged
		}
		if err := s.auth.putAPIUser(u, ok); err != nil {
			s.log.Warn("user of another node not taken", "username", u.Username, "err", err)
		}
	}
	for _, name := range s.auth.apiUserNames() {
		if !kept[name] {
			_ = s.auth.removeAPIUser(name)
		}
	}
	ts, err := s.c.tokens.APITokens(ctx)
	if err != nil {
		return fmt.Errorf("API tokens: %w", err)
	}
	ids := map[string]bool{}
	have := s.auth.tokenIDs()
	for _, t := range ts {
		ids[t.ID] = true
		if !have[t.ID] {
			if err := s.auth.addToken(t); err != nil {
				s.log.Warn("API token of another node not taken", "id", t.ID, "err", err)
			}
		}
	}
	for id := range have {
		if !ids[id] {
			s.auth.revokeToken(id)
		}
	}
	return nil
}

func sameUser(a, b User) bool {
	return a.PasswordHash == b.PasswordHash && a.Role == b.Role && slices.Equal(a.Scope, b.Scope)
}

// apiUserNames are the users made through the API.
func (a *Auth) apiUserNames() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for name, api := range a.api {
		if api {
			out = append(out, name)
		}
	}
	return out
}

// tokenIDs are the ids of the API tokens auth knows.
func (a *Auth) tokenIDs() map[string]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]bool{}
	for _, s := range a.sessions {
		if s.tokenID != "" {
			out[s.tokenID] = true
		}
	}
	return out
}
