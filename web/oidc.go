package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDC is single sign-on through an OpenID Connect provider (Keycloak,
// Entra ID, Okta, Authentik, ...): the authorization code flow with PKCE.
// The ID token's groups decide the role and scope of the sign-in.
type OIDC struct {
	// Issuer is the provider's issuer URL; its discovery document is
	// read at the first sign-in (so a provider that is down at the start
	// does not stop the cloud).
	Issuer   string
	ClientID string
	// ClientSecret is empty for a public client (PKCE alone).
	ClientSecret string
	// RedirectURL is where the provider sends the browser back; empty
	// means /auth/oidc/callback on the host the browser asked for.
	RedirectURL string
	// Scopes are asked for besides openid (default profile, email, groups).
	Scopes []string
	// UsernameClaim names the claim that is the user's name in Calx
	// (default preferred_username; the subject when the token lacks it).
	UsernameClaim string
	// GroupsClaim names the claim with the user's groups (default groups).
	GroupsClaim string
	// Groups map a group to a role and scope; the first entry whose group
	// the user has decides. A user in none of them is refused.
	Groups []GroupRole
	// Label is the sign-in button's text (default "Single sign-on").
	Label string
	// Client reaches the provider (its CA); nil is the default client.
	Client *http.Client
}

// GroupRole gives the members of a provider's group a role and scope.
type GroupRole struct {
	Group string
	Role  string
	Scope Scope
}

// Validate checks the settings; the provider is not asked yet.
func (o *OIDC) Validate() error {
	u, err := url.Parse(o.Issuer)
	switch {
	case o.Issuer == "" || err != nil || u.Host == "":
		return fmt.Errorf("issuer %q: want the provider's URL", o.Issuer)
	case u.Scheme != "https" && !loopback(u.Hostname()):
		return fmt.Errorf("issuer %q: want https (plain http only on this machine's loopback)", o.Issuer)
	case o.ClientID == "":
		return errors.New("client_id: required")
	case len(o.Groups) == 0:
		return errors.New("groups: map at least one of the provider's groups to a role, or no one can sign in")
	}
	if o.RedirectURL != "" {
		if r, err := url.Parse(o.RedirectURL); err != nil || r.Host == "" || (r.Scheme != "https" && r.Scheme != "http") {
			return fmt.Errorf("redirect_url %q: want an absolute http(s) URL", o.RedirectURL)
		}
	}
	for i, g := range o.Groups {
		if g.Group == "" {
			return fmt.Errorf("groups[%d]: group: required", i)
		}
		if err := checkRoleScope(fmt.Sprintf("groups[%d] (%s)", i, g.Group), g.Role, g.Scope); err != nil {
			return err
		}
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sso is the client side of single sign-on.
type sso struct {
	cfg OIDC

	mu       sync.Mutex
	provider *oidc.Provider // nil until discovered
}

const (
	oidcCookie      = "calx_oidc"
	oidcCookiePath  = "/auth/oidc/"
	oidcPending     = 10 * time.Minute // a sign-in started must end within this
	oidcCallTimeout = 15 * time.Second
)

func newSSO(cfg OIDC) (*sso, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("oidc: %w", err)
	}
	if cfg.Scopes == nil {
		cfg.Scopes = []string{"profile", "email", "groups"}
	}
	if cfg.UsernameClaim == "" {
		cfg.UsernameClaim = "preferred_username"
	}
	if cfg.GroupsClaim == "" {
		cfg.GroupsClaim = "groups"
	}
	if cfg.Label == "" {
		cfg.Label = "Single sign-on"
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: oidcCallTimeout}
	}
	return &sso{cfg: cfg}, nil
}

// discover reads the provider's discovery document once it answers.
func (o *sso) discover(ctx context.Context) (*oidc.Provider, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider != nil {
		return o.provider, nil
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, o.cfg.Client), oidcCallTimeout)
	defer cancel()
	p, err := oidc.NewProvider(ctx, o.cfg.Issuer)
	if err != nil {
		return nil, fmt.Errorf("the identity provider %s cannot be reached: %w", o.cfg.Issuer, err)
	}
	o.provider = p
	return p, nil
}

func (o *sso) oauth(p *oidc.Provider, r *http.Request, behindTLS bool) *oauth2.Config {
	redirect := o.cfg.RedirectURL
	if redirect == "" {
		scheme := "http"
		if r.TLS != nil || behindTLS {
			scheme = "https"
		}
		redirect = scheme + "://" + r.Host + oidcCookiePath + "callback"
	}
	return &oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret, Endpoint: p.Endpoint(),
		RedirectURL: redirect, Scopes: append([]string{oidc.ScopeOpenID}, o.cfg.Scopes...)}
}

// role maps the user's groups to the first matching role and scope.
func (o *sso) role(groups []string) (GroupRole, bool) {
	for _, g := range o.cfg.Groups {
		if slices.Contains(groups, g.Group) {
			return g, true
		}
	}
	return GroupRole{}, false
}

func randomString() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// ssoLogin starts a sign-in: it keeps state, nonce and the PKCE verifier
// in a short-lived cookie of the browser and sends it to the provider.
func (s *Server) ssoLogin(w http.ResponseWriter, r *http.Request) {
	p, err := s.sso.discover(r.Context())
	if err != nil {
		s.log.Warn("single sign-on: provider unreachable", "err", err)
		s.loginError(w, http.StatusBadGateway, err.Error())
		return
	}
	var parts [3]string // state, nonce, verifier
	for i := range parts {
		if parts[i], err = randomString(); err != nil {
			s.loginError(w, http.StatusInternalServerError, "no randomness for the sign-in")
			return
		}
	}
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: strings.Join(parts[:], "."), Path: oidcCookiePath,
		MaxAge: int(oidcPending / time.Second), HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: r.TLS != nil || s.opts.BehindTLSProxy})
	to := s.sso.oauth(p, r, s.opts.BehindTLSProxy).AuthCodeURL(parts[0], oauth2.S256ChallengeOption(parts[2]), oidc.Nonce(parts[1]))
	http.Redirect(w, r, to, http.StatusFound)
}

// errSSO is a refused single sign-on, with the status it answers.
type errSSO struct {
	status int
	msg    string
}

func (e *errSSO) Error() string { return e.msg }

func ssoRefused(status int, format string, args ...any) error {
	return &errSSO{status: status, msg: fmt.Sprintf(format, args...)}
}

// ssoCallback ends a sign-in: the code becomes tokens, the ID token is
// verified (signature, issuer, audience, expiry, nonce) and its groups
// give the session its role and scope.
func (s *Server) ssoCallback(w http.ResponseWriter, r *http.Request) {
	// The pending sign-in is used once, whatever comes of it.
	http.SetCookie(w, &http.Cookie{Name: oidcCookie, Value: "", Path: oidcCookiePath, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	u, err := s.ssoUser(r)
	if err != nil {
		status := http.StatusBadGateway
		var e *errSSO
		if errors.As(err, &e) {
			status = e.status
		}
		s.log.Warn("single sign-on refused", "err", err, "remote", r.RemoteAddr)
		s.auditSSO(r, u.Username, "refused: "+err.Error())
		s.loginError(w, status, err.Error())
		return
	}
	tok, exp, err := s.auth.startSession(u, true)
	if err != nil {
		s.loginError(w, http.StatusInternalServerError, err.Error())
		return
	}
	s.auditSSO(r, u.Username, fmt.Sprintf("ok: role %s, scope %v", u.Role, u.Scope))
	s.setSessionCookie(w, r, tok, exp)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) ssoUser(r *http.Request) (User, error) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		return User{}, ssoRefused(http.StatusForbidden, "the identity provider refused the sign-in: %s %s", e, q.Get("error_description"))
	}
	c, err := r.Cookie(oidcCookie)
	parts := strings.Split(cookieValue(c, err), ".")
	if len(parts) != 3 {
		return User{}, ssoRefused(http.StatusBadRequest, "no sign-in was started in this browser, or it took longer than %s: start again", oidcPending)
	}
	state, nonce, verifier := parts[0], parts[1], parts[2]
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(state)) != 1 {
		return User{}, ssoRefused(http.StatusBadRequest, "the sign-in's state does not match the one this browser started: start again")
	}
	code := q.Get("code")
	if code == "" {
		return User{}, ssoRefused(http.StatusBadRequest, "the identity provider sent no code")
	}
	p, err := s.sso.discover(r.Context())
	if err != nil {
		return User{}, err
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(r.Context(), s.sso.cfg.Client), oidcCallTimeout)
	defer cancel()
	tokens, err := s.sso.oauth(p, r, s.opts.BehindTLSProxy).Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return User{}, fmt.Errorf("the identity provider did not exchange the code: %w", err)
	}
	raw, _ := tokens.Extra("id_token").(string)
	if raw == "" {
		return User{}, ssoRefused(http.StatusBadGateway, "the identity provider sent no ID token")
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: s.sso.cfg.ClientID}).Verify(ctx, raw)
	if err != nil {
		return User{}, ssoRefused(http.StatusForbidden, "the ID token is not valid: %v", err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		return User{}, ssoRefused(http.StatusForbidden, "the ID token's nonce is not this sign-in's")
	}
	return s.ssoClaims(idt)
}

// ssoClaims reads the user's name and groups from a verified ID token.
func (s *Server) ssoClaims(idt *oidc.IDToken) (User, error) {
	var claims map[string]any
	if err := idt.Claims(&claims); err != nil {
		return User{}, ssoRefused(http.StatusForbidden, "the ID token's claims: %v", err)
	}
	name, _ := claims[s.sso.cfg.UsernameClaim].(string)
	if name == "" {
		name = idt.Subject
	}
	u := User{Username: name}
	if len(name) > 128 || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return u, ssoRefused(http.StatusForbidden, "the user name %q from the identity provider is not usable", name)
	}
	if s.auth.Known(name) {
		return u, ssoRefused(http.StatusConflict, "a local Calx user is named %q: single sign-on does not take over that name", name)
	}
	var groups []string
	switch g := claims[s.sso.cfg.GroupsClaim].(type) {
	case string:
		groups = []string{g}
	case []any:
		for _, v := range g {
			if s, ok := v.(string); ok {
				groups = append(groups, s)
			}
		}
	}
	gr, ok := s.sso.role(groups)
	if !ok {
		return u, ssoRefused(http.StatusForbidden, "%s is in none of the groups Calx maps to a role (claim %q)", name, s.sso.cfg.GroupsClaim)
	}
	u.Role, u.Scope = gr.Role, gr.Scope
	return u, nil
}

func cookieValue(c *http.Cookie, err error) string {
	if err != nil {
		return ""
	}
	return c.Value
}

func (s *Server) auditSSO(r *http.Request, user, result string) {
	ctx := context.WithValue(r.Context(), ctxKey{}, session{user: user})
	s.auditAction(r.WithContext(ctx), "sso-sign-in", user, result)
}

// loginError shows the sign-in page with what went wrong.
func (s *Server) loginError(w http.ResponseWriter, status int, msg string) {
	s.renderStatus(w, status, "login.html", s.loginData(msg))
}
