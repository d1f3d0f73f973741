package web

import (
	"html/template"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/calx-iiot/calx/cloud"
)

var funcs = template.FuncMap{
	"deref": func(t *time.Time) time.Time {
		if t == nil {
			return time.Time{}
		}
		return *t
	},
	"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	// depth is a tree row's indentation class (app.css has 0 to 16).
	"depth": func(d int) int { return min(d, 16) },
}

// treeNode is one level of the UNS tree as the UI shows it.
type treeNode struct {
	Name     string
	Path     string
	Children []*treeNode
	Tag      *tagJSON
	Depth    int
}

func buildTree(tags []cloud.TagState) *treeNode {
	root := &treeNode{}
	index := map[string]*treeNode{"": root}
	for _, t := range tags {
		segs := strings.Split(string(t.Path), "/")
		parent := root
		for i, seg := range segs {
			p := strings.Join(segs[:i+1], "/")
			n, ok := index[p]
			if !ok {
				n = &treeNode{Name: seg, Path: p, Depth: i}
				index[p] = n
				parent.Children = append(parent.Children, n)
			}
			parent = n
		}
		tj := toTagJSON(t)
		parent.Tag = &tj
	}
	var sortRec func(n *treeNode)
	sortRec = func(n *treeNode) {
		// Folders first, then tags, each by name.
		sort.SliceStable(n.Children, func(i, j int) bool {
			a, b := n.Children[i], n.Children[j]
			if (a.Tag == nil) != (b.Tag == nil) {
				return a.Tag == nil
			}
			return a.Name < b.Name
		})
		for _, c := range n.Children {
			sortRec(c)
		}
	}
	sortRec(root)
	return root
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

func (s *Server) indexPage(w http.ResponseWriter, r *http.Request) {
	sess, _ := r.Context().Value(ctxKey{}).(session)
	tags := s.c.tags.List("")
	s.render(w, "index.html", map[string]any{
		"Version": s.opts.Version,
		"User":    sess.user,
		"Tree":    buildTree(tags),
		"Count":   len(tags),
		"Edges":   s.c.health.Edges(time.Now()),
	})
}
