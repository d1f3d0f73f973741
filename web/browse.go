package web

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/uns"
)

// nodeJSON is one level of the namespace tree: a folder with the number
// of tags under it, a tag, or both (a tag with tags under its path).
type nodeJSON struct {
	Name string   `json:"name"`
	Path uns.Path `json:"path"`
	// Tags counts the tags under the node, itself not included.
	Tags int      `json:"tags"`
	Tag  *tagJSON `json:"tag,omitempty"`
	// Edges are the edge nodes (group/edge) whose tags are under it.
	Edges []string `json:"edges,omitempty"`
	edges map[string]bool
}

// maxChildren bounds one level of the tree the browser is sent.
const maxChildren = 2000

// children answers the next level of the namespace under ?prefix= (the
// root when absent), within the user's scope: the browser opens the tree
// a level at a time and never holds the whole namespace.
func (s *Server) children(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	if prefix != "" {
		if err := uns.Path(prefix).Validate(); err != nil {
			writeError(w, http.StatusBadRequest, "prefix: "+err.Error())
			return
		}
	}
	depth := 0
	if prefix != "" {
		depth = strings.Count(prefix, "/") + 1
	}
	nodes := map[string]*nodeJSON{}
	for _, p := range scopeOf(r).Within(prefix) {
		s.c.tags.Scan(p, func(t *cloud.TagState) {
			segs := strings.SplitN(string(t.Path), "/", depth+2)
			if len(segs) <= depth {
				return // the prefix itself
			}
			n := nodes[segs[depth]]
			if n == nil {
				n = &nodeJSON{Name: segs[depth], Path: uns.Path(strings.Join(segs[:depth+1], "/"))}
				nodes[segs[depth]] = n
			}
			if len(segs) == depth+1 {
				j := toTagJSON(*t)
				n.Tag = &j
			} else {
				n.Tags++
			}
			if e := t.Sparkplug.Group + "/" + t.Sparkplug.Edge; len(e) > 1 {
				if n.edges == nil {
					n.edges = map[string]bool{}
				}
				n.edges[e] = true
			}
		})
	}
	out := make([]*nodeJSON, 0, len(nodes))
	for _, n := range nodes {
		for e := range n.edges {
			n.Edges = append(n.Edges, e)
		}
		slices.Sort(n.Edges)
		out = append(out, n)
	}
	// Folders first, then tags, each by name; names starting with an
	// underscore (an edge's own diagnostics, alarms) after the others.
	slices.SortFunc(out, func(a, b *nodeJSON) int {
		return cmp.Or(cmp.Compare(rank(a), rank(b)), strings.Compare(a.Name, b.Name))
	})
	truncated := len(out) > maxChildren
	if truncated {
		out = out[:maxChildren]
	}
	writeJSON(w, http.StatusOK, map[string]any{"prefix": prefix, "count": len(out), "children": out, "truncated": truncated})
}

// rank orders a level of the tree: folders, tags, then the underscore
// names.
func rank(n *nodeJSON) int {
	r := 0
	if n.Tags == 0 {
		r = 1
	}
	if strings.HasPrefix(n.Name, "_") {
		r += 2
	}
	return r
}

// search finds tags whose path, description or unit hold every word of
// ?q= (any case), within the user's scope; ?limit= (default 100, at most
// 1000) bounds the answer, count says how many matched.
func (s *Server) search(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	words := strings.Fields(strings.ToLower(q.Get("q")))
	if len(words) == 0 {
		writeError(w, http.StatusBadRequest, "q: give a word to look for")
		return
	}
	limit := 100
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit: %q is not a number from 1 to 1000", l))
			return
		}
		limit = n
	}
	var paths []uns.Path
	for _, p := range scopeOf(r).Within("") {
		s.c.tags.Scan(p, func(t *cloud.TagState) {
			hay := strings.ToLower(string(t.Path) + "\x00" + t.Description + "\x00" + t.Unit)
			for _, w := range words {
				if !strings.Contains(hay, w) {
					return
				}
			}
			paths = append(paths, t.Path)
		})
	}
	slices.Sort(paths)
	found := make([]tagJSON, 0, min(limit, len(paths)))
	for _, p := range paths[:min(limit, len(paths))] {
		if t, ok := s.c.tags.Get(p); ok {
			found = append(found, toTagJSON(t))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"q": q.Get("q"), "count": len(paths), "tags": found, "truncated": len(paths) > len(found)})
}
