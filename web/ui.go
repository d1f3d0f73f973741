package web

import (
	"html/template"
	"net/http"
)

var funcs = template.FuncMap{}

// pages of the UI: each its own URL, template and script.
var pages = []struct {
	url, name, title string
	charts           bool // draws with uPlot
	admin            bool // for admins only
}{
	{"/", "home", "Sites", false, false},
	{"/uns", "uns", "Namespace", false, false},
	{"/trends", "trends", "Trends", true, false},
	{"/alarms", "alarms", "Alarms", false, false},
	{"/cycles", "cycles", "Cycles", true, false},
	{"/reports/emissions", "emissions", "Emission exceedances", false, false},
	{"/fleet", "fleet", "Fleet", false, false},
	{"/config", "config", "Config", false, false},
	{"/admin", "admin", "Administration", false, true},
}

// pageData is what the layout of every page shows.
type pageData struct {
	Page, Title, User, Role, Version string
	Scope                            Scope
	Admin, Engineer, Charts          bool
}

// page serves one page: the layout and its template; the page's script
// fills it from the API.
func (s *Server) page(name, title string, charts, adminOnly bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, _ := r.Context().Value(ctxKey{}).(session)
		if adminOnly && sess.role != RoleAdmin {
			s.renderStatus(w, http.StatusForbidden, "forbidden.html", pageData{Page: "forbidden", Title: "Not for your role",
				User: sess.user, Role: sess.role, Version: s.opts.Version, Admin: false})
			return
		}
		s.render(w, name+".html", pageData{Page: name, Title: title, User: sess.user, Role: sess.role, Scope: sess.scope,
			Version: s.opts.Version, Admin: sess.role == RoleAdmin,
			Engineer: sess.role == RoleAdmin || sess.role == RoleEngineer, Charts: charts})
	}
}

func (s *Server) render(w http.ResponseWriter, name string, data any) {
	s.renderStatus(w, http.StatusOK, name, data)
}

func (s *Server) renderStatus(w http.ResponseWriter, status int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := s.tmpl.ExecuteTemplate(w, name, data); err != nil {
		s.log.Error("template failed", "template", name, "err", err)
	}
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.auth.check(token(r)); ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.render(w, "login.html", s.loginData(""))
}

// loginData is what the sign-in page shows: the single sign-on button
// when there is one, and an error of the last attempt.
func (s *Server) loginData(errMsg string) map[string]any {
	d := map[string]any{"Version": s.opts.Version, "Error": errMsg}
	if s.sso != nil {
		d["SSO"] = s.sso.cfg.Label
	}
	return d
}
