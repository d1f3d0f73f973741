// Package oidctest runs a real OpenID Connect provider (zitadel's, with
// its in-memory storage) on a free port for tests of single sign-on, and
// plays the browser through its sign-in form.
package oidctest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// Provider is a running OpenID Connect provider.
type Provider struct {
	// Issuer is its URL, http://127.0.0.1:port.
	Issuer string

	users   *users
	clients map[string]*storage.Client

	mu     sync.Mutex
	tamper func(idToken string) string
}

// Start starts a provider that stops when the test ends.
func Start(t testing.TB) *Provider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Provider{Issuer: "http://" + ln.Addr().String(), users: &users{byID: map[string]*storage.User{}},
		clients: map[string]*storage.Client{}}
	st := &groupStorage{Storage: storage.NewStorageWithClients(p.users, p.clients), users: p.users}
	cfg := &op.Config{CodeMethodS256: true, AuthMethodPost: true}
	if _, err := rand.Read(cfg.CryptoKey[:]); err != nil {
		t.Fatal(err)
	}
	prov, err := op.NewProvider(cfg, st, op.StaticIssuer(p.Issuer), op.WithAllowInsecure())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	// The provider's own sign-in form, where its clients send browsers.
	mux.HandleFunc("GET /login/username", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "<form method=post><input name=id value=%q><input name=username><input name=password type=password></form>",
			r.URL.Query().Get("authRequestID"))
	})
	done := op.AuthCallbackURL(prov)
	mux.Handle("POST /login/username", op.NewIssuerInterceptor(prov.IssuerFromRequest).HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.FormValue("id")
		if err := st.CheckUsernamePassword(r.FormValue("username"), r.FormValue("password"), id); err != nil {
			http.Error(w, "wrong user name or password", http.StatusUnauthorized)
			return
		}
		http.Redirect(w, r, done(r.Context(), id), http.StatusFound)
	}))
	mux.Handle("/", prov)
	srv := &http.Server{Handler: p.tampering(mux), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return p
}

// AddUser adds a user with a password and groups.
func (p *Provider) AddUser(name, password string, groups ...string) {
	p.users.mu.Lock()
	defer p.users.mu.Unlock()
	id := fmt.Sprintf("id-%d", len(p.users.byID)+1)
	p.users.byID[id] = &storage.User{ID: id, Username: name, Password: password, Email: name + "@plant.example", EmailVerified: true}
	p.users.groups = append(p.users.groups, userGroups{id: id, groups: groups})
}

// AddClient registers a confidential client with one redirect URI; call
// it before the first sign-in.
func (p *Provider) AddClient(id, secret, redirectURI string) {
	p.clients[id] = storage.WebClient(id, secret, redirectURI)
}

// Tamper changes every ID token the token endpoint sends from now on, as
// a man in the middle would; nil stops it.
func (p *Provider) Tamper(f func(idToken string) string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = f
}

// tampering rewrites the id_token of token answers while Tamper is set.
func (p *Provider) tampering(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		f := p.tamper
		p.mu.Unlock()
		if f == nil || r.URL.Path != "/oauth/token" {
			next.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err == nil {
			if tok, ok := body["id_token"].(string); ok {
				body["id_token"] = f(tok)
			}
		}
		out, _ := json.Marshal(body)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(out)
	})
}

// SignIn plays a browser: it opens start (the relying party's sign-in
// URL), fills in the provider's form and follows the redirects back. It
// returns the last answer, its body read.
func (p *Provider) SignIn(t testing.TB, browser *http.Client, start, user, password string) (*http.Response, string) {
	t.Helper()
	res, err := browser.Get(start)
	if err != nil {
		t.Fatalf("open %s: %v", start, err)
	}
	res.Body.Close()
	id := res.Request.URL.Query().Get("authRequestID")
	if res.StatusCode != http.StatusOK || id == "" {
		t.Fatalf("the provider's sign-in form was not reached: %d at %s", res.StatusCode, res.Request.URL)
	}
	res, err = browser.PostForm(p.Issuer+"/login/username", url.Values{"id": {id}, "username": {user}, "password": {password}})
	if err != nil {
		t.Fatalf("sign in at the provider: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res, string(b)
}

// ChangeClaims changes an ID token's claims and keeps its signature, so
// that the signature no longer fits.
func ChangeClaims(idToken string, change func(claims map[string]any)) string {
	parts := strings.Split(idToken, ".")
	claims, ok := claimsOf(parts)
	if !ok {
		return idToken
	}
	change(claims)
	out, _ := json.Marshal(claims)
	parts[1] = base64.RawURLEncoding.EncodeToString(out)
	return strings.Join(parts, ".")
}

// SignElsewhere changes an ID token's claims and signs it again with a
// key of its own under the provider's key ID, as a forger would.
func SignElsewhere(idToken string, change func(claims map[string]any)) string {
	parts := strings.Split(idToken, ".")
	claims, ok := claimsOf(parts)
	if !ok {
		return idToken
	}
	change(claims)
	var header struct {
		KID string `json:"kid"`
	}
	if h, err := base64.RawURLEncoding.DecodeString(parts[0]); err == nil {
		json.Unmarshal(h, &header)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return idToken
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", header.KID))
	if err != nil {
		return idToken
	}
	payload, _ := json.Marshal(claims)
	jws, err := signer.Sign(payload)
	if err != nil {
		return idToken
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		return idToken
	}
	return out
}

func claimsOf(parts []string) (map[string]any, bool) {
	if len(parts) != 3 {
		return nil, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, false
	}
	var claims map[string]any
	return claims, json.Unmarshal(raw, &claims) == nil
}

// users is the provider's user store.
type users struct {
	mu     sync.Mutex
	byID   map[string]*storage.User
	groups []userGroups
}

type userGroups struct {
	id     string
	groups []string
}

func (u *users) GetUserByID(id string) *storage.User {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.byID[id]
}

func (u *users) GetUserByUsername(name string) *storage.User {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, v := range u.byID {
		if v.Username == name {
			return v
		}
	}
	return nil
}

func (u *users) ExampleClientID() string { return "service" }

func (u *users) groupsOf(id string) []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, g := range u.groups {
		if g.id == id {
			return g.groups
		}
	}
	return nil
}

// groupStorage puts the user's name and groups into the ID token, as a
// provider's claim mappers do.
type groupStorage struct {
	*storage.Storage
	users *users
}

// GetClientByClientID lets the clients ask for the groups scope.
func (s *groupStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return groupsClient{c}, nil
}

type groupsClient struct{ op.Client }

func (c groupsClient) IsScopeAllowed(scope string) bool {
	return scope == "groups" || c.Client.IsScopeAllowed(scope)
}

func (s *groupStorage) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, req, scopes); err != nil {
		return err
	}
	if u := s.users.GetUserByID(req.GetSubject()); u != nil {
		ui.PreferredUsername = u.Username
	}
	if slices.Contains(scopes, "groups") {
		ui.AppendClaims("groups", s.users.groupsOf(req.GetSubject()))
	}
	return nil
}
