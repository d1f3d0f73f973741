// Package web is Calx's HTTP face: the JSON API under /api/v1, health and
// readiness, and the server-rendered UI with its embedded assets. It maps
// every error to a JSON answer in one place (writeError) and owns login
// sessions; it reads the cloud's state and never writes plant data.
package web

import (
	"context"
	"crypto/tls"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/calx-iiot/calx/cloud"
)

//go:embed templates static
var assets embed.FS

// Options configure the HTTP server.
type Options struct {
	Listen string
	// TLS, when set, serves HTTPS.
	TLS     *tls.Config
	Cloud   *cloud.Cloud
	Auth    *Auth
	Version string
	Logger  *slog.Logger
}

// Server is the HTTP server.
type Server struct {
	opts  Options
	log   *slog.Logger
	srv   *http.Server
	ln    net.Listener
	tmpl  *template.Template
	cloud *cloud.Cloud
	auth  *Auth
}

// New builds the server and its routes.
func New(opts Options) (*Server, error) {
	if opts.Cloud == nil || opts.Auth == nil {
		return nil, errors.New("web: cloud and auth are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	tmpl, err := template.New("").Funcs(funcs).ParseFS(assets, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("web: templates: %w", err)
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "web"), tmpl: tmpl, cloud: opts.Cloud, auth: opts.Auth}
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	hm := newHTTPMetrics()
	r.Use(middleware.Recoverer)
	r.Use(hm.middleware)
	r.Use(securityHeaders)
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Handle("/metrics", metricsHandler(s.cloud, hm))
	static, _ := fs.Sub(assets, "static")
	r.Handle("/static/*", http.StripPrefix("/static/", http.FileServerFS(static)))
	r.Get("/login", s.loginPage)
	r.With(s.requirePage).Get("/", s.indexPage)
	r.Route("/api/v1", func(r chi.Router) {
		r.Post("/login", s.login)
		r.Group(func(r chi.Router) {
			r.Use(s.requireAPI)
			r.Post("/logout", s.logout)
			r.Get("/namespace", s.namespace)
			r.Get("/history", s.history)
			r.Get("/latest", s.latest)
			r.Get("/live", s.live)
			r.Get("/edges", s.edges)
			r.Get("/edges/{group}/{edge}", s.edge)
			r.Get("/fleet/alarms", s.fleetAlarms)
			r.Get("/alarms", s.alarms)
			r.Get("/alarms/journal", s.alarmJournal)
			r.Get("/alarms/statistics", s.alarmStatistics)
			r.With(s.requireRole(RoleAdmin, RoleEngineer, RoleOperator)).Post("/alarms/ack", s.ackAlarm)
			r.With(s.requireRole(RoleAdmin, RoleEngineer, RoleOperator)).Post("/alarms/shelve", s.shelveAlarm)
			r.Get("/cycles", s.cycles)
			r.Get("/emissions/report", s.emissionsReport)
			r.With(s.requireRole(RoleAdmin, RoleEngineer)).Post("/write", s.write)
			r.With(s.requireRole(RoleAdmin)).Get("/audit", s.audit)
			r.With(s.requireRole(RoleAdmin)).Post("/edges", s.provisionEdge)
			r.With(s.requireRole(RoleAdmin)).Delete("/edges/{group}/{edge}", s.revokeEdge)
			r.With(s.requireRole(RoleAdmin)).Post("/mqtt-users", s.addMQTTUser)
			r.With(s.requireRole(RoleAdmin)).Get("/mqtt-users", s.mqttUsers)
			r.With(s.requireRole(RoleAdmin)).Post("/mqtt-users/{username}/disable", s.disableMQTTUser(true))
			r.With(s.requireRole(RoleAdmin)).Post("/mqtt-users/{username}/enable", s.disableMQTTUser(false))
			r.With(s.requireRole(RoleAdmin)).Post("/mqtt-users/{username}/password", s.rotateMQTTPassword)
			r.With(s.requireRole(RoleAdmin)).Delete("/mqtt-users/{username}", s.deleteMQTTUser)
			r.Get("/config", s.getConfig)
			r.Get("/config/versions", s.configVersions)
			r.Get("/config/diff", s.configDiff)
			r.Get("/config/edges", s.configEdges)
			r.Get("/templates", s.templates)
			r.Get("/instances", s.instances)
			r.Get("/sites", s.sites)
			r.Get("/rollouts/{id}", s.rolloutProgress)
			r.With(s.requireRole(RoleAdmin, RoleEngineer)).Put("/config", s.putConfig)
			r.With(s.requireRole(RoleAdmin, RoleEngineer)).Post("/config/rollback", s.configRollback)
			r.With(s.requireRole(RoleAdmin, RoleEngineer)).Post("/rollouts", s.rollout)
			r.With(s.requireRole(RoleAdmin, RoleEngineer)).Post("/sql", s.sqlQuery)
		})
		r.NotFound(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("no such API route: %s %s", r.Method, r.URL.Path))
		})
		r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s", r.Method, r.URL.Path))
		})
	})
	return r
}

// Start listens and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("web: listen %s: %w", s.opts.Listen, err)
	}
	if s.opts.TLS != nil {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	s.ln = ln
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	return nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops the server, ending live streams.
func (s *Server) Shutdown(ctx context.Context) error {
	s.srv.SetKeepAlivesEnabled(false)
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return s.srv.Close()
	}
	return err
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

type ctxKey struct{}

func (s *Server) requireAPI(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, ok := s.auth.check(token(r))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="calx"`)
			writeError(w, http.StatusUnauthorized, "authentication required: POST /api/v1/login, then send Authorization: Bearer <token>")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, sess)))
	})
}

// requireRole lets through only sessions with one of roles.
func (s *Server) requireRole(roles ...string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sess, _ := r.Context().Value(ctxKey{}).(session)
			for _, role := range roles {
				if sess.role == role {
					next.ServeHTTP(w, r)
					return
				}
			}
			writeError(w, http.StatusForbidden, fmt.Sprintf("role %q may not do this; it needs one of %v", sess.role, roles))
		})
	}
}

func (s *Server) requirePage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess, ok := s.auth.check(token(r))
		if !ok {
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, sess)))
	})
}

// writeError is the one place where an error becomes an HTTP answer.
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "version": s.opts.Version})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.cloud.ReadyErr(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready"})
}

// Assets gives the embedded templates and static files (for tests and
// tools that check what a build embeds).
func Assets() fs.FS { return assets }
