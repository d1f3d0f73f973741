// Package web is Calx's HTTP face: the JSON API under /api/v1, health and
// readiness, and the server-rendered UI with its embedded assets. What it
// needs of the cloud it declares as small interfaces (deps.go); the
// domain's errors map to HTTP status in one place (statusOf). It owns
// login sessions; it reads the cloud's state and never writes plant data
// but through the cloud's own write path.
package web

import (
	"cmp"
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
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/guard"
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
	// MaxConnections and MaxPerAddress bound the open connections, in all
	// and from one address; zero means 4096 and 256.
	MaxConnections, MaxPerAddress int
	// MCPRate and MCPBurst bound each user's MCP calls: a second's worth
	// and how many at once; zero means 20 and 40.
	MCPRate  float64
	MCPBurst int
	// MCPWrites are the roles whose users may write tags and acknowledge
	// alarms through MCP, each after confirming; none by default.
	MCPWrites []string
	// MetricsTokenSHA256, when set, is the hex SHA-256 of the bearer
	// token /metrics asks for.
	MetricsTokenSHA256 string
	// SessionIdle ends a sign-in unused for this long, SessionMax any
	// after this long; zero means 2h and 12h.
	SessionIdle, SessionMax time.Duration
	// BehindTLSProxy makes the session cookie Secure when the server
	// itself speaks plain HTTP behind an HTTPS proxy.
	BehindTLSProxy bool
	// OIDC, when set, offers single sign-on beside the local users.
	OIDC   *OIDC
	Logger *slog.Logger
}

// Timeouts of the HTTP server; a live stream sets its own write deadlines.
const (
	readHeaderTimeout  = 10 * time.Second
	readTimeout        = time.Minute
	serverWriteTimeout = 10 * time.Minute // a large export
	idleTimeout        = 2 * time.Minute
	streamWriteTimeout = time.Minute
)

// Server is the HTTP server.
type Server struct {
	opts Options
	log  *slog.Logger
	srv  *http.Server
	// router answers every route; MCP tools ask the API through it.
	router http.Handler
	// mcpRate bounds each user's MCP calls (mcpmore.go).
	mcpRate userRates
	// mcpWriters are the roles with MCP's write tools; confirms are the
	// questions those tools asked (mcpwrite.go).
	mcpWriters []string
	confirms   *confirmations
	// identityMu serialises changes of users and tokens with their sync
	// from the other nodes of a cluster (identities.go).
	identityMu sync.Mutex
	ln         net.Listener
	caps       *guard.Caps
	tmpl       *template.Template
	cloud      *cloud.Cloud // for /metrics alone
	auth       *Auth
	sso        *sso  // nil without single sign-on
	c          parts // what the handlers use of the cloud

	stop  chan struct{} // ends the loops Start began
	loops sync.WaitGroup
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
	if err := guard.CheckTokenSHA256(opts.MetricsTokenSHA256); err != nil {
		return nil, fmt.Errorf("web: metrics_%w", err)
	}
	ps, ok := partsOf(opts.Cloud)
	if !ok {
		return nil, errors.New("web: the cloud must be started first")
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "web"), tmpl: tmpl, cloud: opts.Cloud, auth: opts.Auth, c: ps}
	if opts.SessionIdle < 0 || opts.SessionMax < 0 {
		return nil, errors.New("web: session_idle and session_max: not negative")
	}
	if opts.OIDC != nil {
		if s.sso, err = newSSO(*opts.OIDC); err != nil {
			return nil, fmt.Errorf("web: %w", err)
		}
	}
	opts.Auth.setLifetimes(cmp.Or(opts.SessionIdle, defaultSessionIdle), cmp.Or(opts.SessionMax, defaultSessionMax))
	if err := s.loadUsers(context.Background()); err != nil {
		return nil, fmt.Errorf("web: users: %w", err)
	}
	if err := s.loadTokens(context.Background()); err != nil {
		return nil, fmt.Errorf("web: API tokens: %w", err)
	}
	s.caps = guard.NewCaps(cmp.Or(opts.MaxConnections, 4096), cmp.Or(opts.MaxPerAddress, 256), s.log)
	if opts.MCPRate < 0 || opts.MCPBurst < 0 {
		return nil, errors.New("web: mcp rate and burst: not negative")
	}
	s.mcpRate = userRates{rate: cmp.Or(opts.MCPRate, defaultMCPRate), burst: cmp.Or(opts.MCPBurst, defaultMCPBurst)}
	if err := mcpWriteRoles(opts.MCPWrites); err != nil {
		return nil, fmt.Errorf("web: %w", err)
	}
	s.mcpWriters = opts.MCPWrites
	if s.confirms, err = newConfirmations(s.c.confirm); err != nil {
		return nil, fmt.Errorf("web: MCP confirmations: %w", err)
	}
	s.router = s.routes()
	s.srv = &http.Server{Handler: s.router, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout,
		WriteTimeout: serverWriteTimeout, IdleTimeout: idleTimeout, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	return s, nil
}

func (s *Server) routes() http.Handler {
	r := chi.NewRouter()
	hm := newHTTPMetrics()
	r.Use(middleware.Recoverer)
	r.Use(hm.middleware)
	r.Use(s.securityHeaders)
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Handle("/metrics", guard.RequireToken(s.opts.MetricsTokenSHA256, metricsHandler(s.cloud, hm)))
	static, _ := fs.Sub(assets, "static")
	r.Handle("/static/*", http.StripPrefix("/static/", noListing(http.FileServerFS(static))))
	r.Get("/login", s.loginPage)
	r.Get("/favicon.ico", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/static/favicon.svg", http.StatusMovedPermanently)
	})
	if s.sso != nil {
		r.Get(oidcCookiePath+"login", s.ssoLogin)
		r.Get(oidcCookiePath+"callback", s.ssoCallback)
	}
	for _, pg := range pages {
		r.With(s.requirePage).Get(pg.url, s.page(pg.name, pg.title, pg.charts, pg.admin))
	}
	r.With(s.requirePage).Get("/machines/*", s.page("machine", "Machine", true, false))
	r.With(s.requirePage).Get("/sites/*", s.page("site", "Site", false, false))
	// AI assistants: the Model Context Protocol (mcp.go).
	r.With(sameOrigin, s.requireAPI).Handle("/mcp", s.newMCP())
	r.Route("/api/v1", func(r chi.Router) {
		r.Use(sameOrigin)
		r.Post("/login", s.login)
		r.Group(func(r chi.Router) {
			r.Use(s.requireAPI)
			r.Post("/logout", s.logout)
			r.Get("/namespace", s.namespace)
			r.Get("/namespace/children", s.children)
			r.Get("/namespace/search", s.search)
			r.Get("/history", s.history)
			r.Get("/latest", s.latest)
			r.Get("/live", s.live)
			r.Get("/edges", s.edges)
			r.With(s.requireRole(RoleAdmin, RoleEngineer)).Get("/cluster", s.clusterNodes)
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
			r.With(s.requireRole(RoleAdmin)).Get("/users", s.users)
			r.With(s.requireRole(RoleAdmin)).Post("/users", s.createUser)
			r.With(s.requireRole(RoleAdmin)).Patch("/users/{name}", s.changeUser)
			r.With(s.requireRole(RoleAdmin)).Delete("/users/{name}", s.deleteUser)
			r.With(s.requireRole(RoleAdmin)).Post("/users/{name}/sign-out", s.signOutUser)
			r.Post("/me/password", s.changeOwnPassword)
			r.With(s.requireRole(RoleAdmin)).Get("/tokens", s.tokens)
			r.With(s.requireRole(RoleAdmin)).Post("/tokens", s.createToken)
			r.With(s.requireRole(RoleAdmin)).Delete("/tokens/{id}", s.deleteToken)
			r.With(s.requireRole(RoleAdmin)).Post("/edges", s.provisionEdge)
			r.With(s.requireRole(RoleAdmin)).Delete("/edges/{group}/{edge}", s.revokeEdge)
			r.With(s.requireRole(RoleAdmin)).Post("/mqtt-users", s.addMQTTUser)
			r.With(s.requireRole(RoleAdmin)).Get("/mqtt-users", s.mqttUsers)
			r.With(s.requireRole(RoleAdmin)).Post("/mqtt-users/{username}/disable", s.disableMQTTUser(true))
			r.With(s.requireRole(RoleAdmin)).Post("/mqtt-users/{username}/enable", s.disableMQTTUser(false))
			r.With(s.requireRole(RoleAdmin)).Post("/mqtt-users/{username}/password", s.rotateMQTTPassword)
			r.With(s.requireRole(RoleAdmin)).Delete("/mqtt-users/{username}", s.deleteMQTTUser)
			r.With(requireWholeScope("the fleet config")).Get("/config", s.getConfig)
			r.Get("/config/versions", s.configVersions)
			r.With(s.requireRole(RoleAdmin, RoleEngineer)).Post("/config/validate", s.validateConfig)
			r.With(requireWholeScope("the fleet config")).Get("/config/diff", s.configDiff)
			r.Get("/config/edges", s.configEdges)
			r.Get("/templates", s.templates)
			r.Get("/dashboards", s.dashboards)
			r.With(s.requireRole(RoleAdmin, RoleEngineer)).Put("/dashboards/{template}", s.putDashboard)
			r.Get("/instances", s.instances)
			r.Get("/sites", s.sites)
			r.Get("/rollouts/{id}", s.rolloutProgress)
			r.With(s.requireRole(RoleAdmin, RoleEngineer), requireWholeScope("the fleet config")).Put("/config", s.putConfig)
			r.With(s.requireRole(RoleAdmin, RoleEngineer), requireWholeScope("the fleet config")).Post("/config/rollback", s.configRollback)
			r.With(s.requireRole(RoleAdmin, RoleEngineer)).Post("/rollouts", s.rollout)
			r.With(s.requireRole(RoleAdmin, RoleEngineer), requireWholeScope("SQL")).Post("/sql", s.sqlQuery)
			r.With(s.requireRole(RoleAdmin, RoleEngineer)).Get("/sinks", s.sinks)
			r.Get("/releases", s.listReleases)
			r.Get("/releases/rollouts", s.listUpdateRollouts)
			r.Get("/releases/rollouts/{id}", s.updateRollout)
			r.Get("/releases/{version}", s.getRelease)
			r.With(s.requireRole(RoleAdmin), requireWholeScope("edge releases")).Post("/releases", s.uploadRelease)
			r.With(s.requireRole(RoleAdmin), requireWholeScope("edge releases")).Post("/releases/rollouts", s.startUpdateRollout)
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
	ln = guard.LimitListener(ln, s.caps)
	if s.opts.TLS != nil {
		ln = tls.NewListener(ln, s.opts.TLS)
	}
	s.ln = ln
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	s.stop = make(chan struct{})
	s.loops.Go(s.keepTokenUses)
	if s.c.cluster != nil && s.c.cluster.Replicas() > 1 {
		s.loops.Go(s.followIdentities) // a node of a cluster
	}
	return nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops the server, ending live streams.
func (s *Server) Shutdown(ctx context.Context) error {
	s.srv.SetKeepAlivesEnabled(false)
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = s.srv.Close()
	}
	if s.stop != nil {
		close(s.stop)
		s.loops.Wait()
		s.stop = nil
		s.saveTokenUses(ctx)
	}
	return err
}

// contentSecurityPolicy of every answer.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

func (s *Server) securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		// Scripts and styles from the server's own files only: no inline
		// script or style, so that an injected one does not run.
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		if s.opts.TLS != nil {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin refuses a request that changes something when a browser
// says it comes from a page of another site: the session cookie is
// SameSite=Strict already, and this holds with browsers that ignore it.
func sameOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
		default:
			origin := r.Header.Get("Origin")
			if origin == "" {
				origin = r.Header.Get("Referer")
			}
			if origin != "" {
				u, err := url.Parse(origin)
				if err != nil || !strings.EqualFold(u.Host, r.Host) {
					writeError(w, http.StatusForbidden, fmt.Sprintf("cross-site request refused: origin %q is not this server", origin))
					return
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// noListing answers 404 for a folder of the static files, not its list.
func noListing(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			writeError(w, http.StatusNotFound, "no such file")
			return
		}
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
	if err := s.c.ready(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "reason": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready"})
}

// Assets gives the embedded templates and static files (for tests and
// tools that check what a build embeds).
func Assets() fs.FS { return assets }
