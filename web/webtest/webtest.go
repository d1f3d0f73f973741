// Package webtest starts a real cloud with its web server for tests, on
// free ports in a temporary folder, and calls its API as a signed-in user.
package webtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/internal/stuck"
	"github.com/calx-iiot/calx/web"
)

// AdminPassword is the password of the admin user Start makes.
const AdminPassword = "test-admin-pw"

// App is a running cloud and its web server.
type App struct {
	Cloud *cloud.Cloud
	Web   *web.Server
	// Base is the API's base URL, http://host:port.
	Base string
	t    testing.TB
	once sync.Once
	err  error
}

// Start starts a cloud (its data in a temporary folder unless co.DataDir
// is set, MQTT on a free port unless co.MQTT.Listen is) and its web server
// on a free port, with an admin user (AdminPassword) besides users. It
// stops when the test ends, if it has not been stopped before.
func Start(t testing.TB, co cloud.Options, users ...web.User) *App {
	t.Helper()
	return StartWith(t, co, web.Options{}, users...)
}

// StartWith is Start with web options (Listen, Cloud, Auth and Logger are
// Start's own).
func StartWith(t testing.TB, co cloud.Options, wo web.Options, users ...web.User) *App {
	t.Helper()
	if co.DataDir == "" {
		co.DataDir = filepath.Join(t.TempDir(), "cloud")
	}
	if co.MQTT.Listen == "" {
		co.MQTT.Listen = "127.0.0.1:0"
	}
	admin, err := cloud.HashPassword(AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	users = append([]web.User{{Username: "admin", PasswordHash: admin, Role: web.RoleAdmin}}, users...)
	c, err := cloud.New(co)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := &App{Cloud: c, t: t}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Shutdown(ctx)
	})
	auth, err := web.NewAuth(users)
	if err != nil {
		t.Fatal(err)
	}
	wo.Listen, wo.Cloud, wo.Auth, wo.Logger = "127.0.0.1:0", c, auth, co.Logger
	a.Web, err = web.New(wo)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Web.Start(); err != nil {
		t.Fatal(err)
	}
	a.Base = "http://" + a.Web.Addr()
	return a
}

// Shutdown stops the web server, then the cloud; calling it again returns
// the first call's error.
func (a *App) Shutdown(ctx context.Context) error {
	a.once.Do(func() {
		stuck.Within(a.t, time.Minute, "the cloud's shutdown", func() {
			var errWeb error
			if a.Web != nil {
				errWeb = a.Web.Shutdown(ctx)
			}
			a.err = errors.Join(errWeb, a.Cloud.Shutdown(ctx))
		})
	})
	return a.err
}

// Admin signs in as the admin.
func (a *App) Admin() *Client { return Login(a.t, a.Base, "admin", AdminPassword) }

// httpClient bounds every call, so that a stream answered where an error
// was expected fails the test instead of hanging it.
var httpClient = &http.Client{Timeout: 30 * time.Second}

// Client calls the API with a session's bearer token.
type Client struct {
	T     testing.TB
	Base  string
	Token string
}

// Login signs in to the API at base and fails the test if it cannot.
func Login(t testing.TB, base, user, password string) *Client {
	t.Helper()
	c := &Client{T: t, Base: base}
	code, out := c.Do("POST", "/api/v1/login", map[string]string{"username": user, "password": password})
	if code != http.StatusOK {
		t.Fatalf("login as %s: %d %v", user, code, out)
	}
	c.Token, _ = out["token"].(string)
	return c
}

// Do calls the API with body (JSON) and returns the status and the JSON
// object answered; an answer that is not JSON fails the test.
func (c *Client) Do(method, path string, body any) (int, map[string]any) {
	c.T.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		c.T.Fatal(err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	res, err := httpClient.Do(req)
	if err != nil {
		c.T.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		c.T.Fatalf("%s %s: not JSON (%d): %s", method, path, res.StatusCode, b)
	}
	return res.StatusCode, out
}

// Text calls the API with a body that is not JSON (YAML, for one) and
// returns the status and the answer as text; accept, when set, is the
// Accept header.
func (c *Client) Text(method, path, body, accept string) (int, string) {
	c.T.Helper()
	req, err := http.NewRequest(method, c.Base+path, strings.NewReader(body))
	if err != nil {
		c.T.Fatal(err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	res, err := httpClient.Do(req)
	if err != nil {
		c.T.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}
