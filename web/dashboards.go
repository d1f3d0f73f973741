package web

import (
	"fmt"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/calx-iiot/calx/cloud"
)

// dashboards lists the layouts set for templates' machines.
func (s *Server) dashboards(w http.ResponseWriter, r *http.Request) {
	ds, err := s.c.boards.Dashboards(r.Context())
	if err != nil {
		s.log.Error("dashboards not listed", "err", err)
		writeError(w, http.StatusInternalServerError, "dashboards not listed")
		return
	}
	if ds == nil {
		ds = []cloud.Dashboard{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(ds), "dashboards": ds})
}

// putDashboard sets how a template's machines are shown: {"kpis": [...],
// "tiles": [...]}, tag names under the machine, in order.
func (s *Server) putDashboard(w http.ResponseWriter, r *http.Request) {
	var req struct {
		KPIs  []string `json:"kpis"`
		Tiles []string `json:"tiles"`
	}
	if err := decodeBody(r, &req, `{"kpis": ["state", ...], "tiles": ["burning_zone_temp", ...]}`); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	d := cloud.Dashboard{Template: chi.URLParam(r, "template"), KPIs: req.KPIs, Tiles: req.Tiles, UpdatedBy: user(r), Updated: time.Now().UTC()}
	if err := s.c.boards.PutDashboard(r.Context(), d); err != nil {
		s.auditAction(r, "dashboard-save", d.Template, "refused: "+err.Error())
		if st := statusOf(err); st != http.StatusInternalServerError {
			writeError(w, st, err.Error())
			return
		}
		s.log.Error("dashboard not saved", "err", err)
		writeError(w, http.StatusInternalServerError, "dashboard not saved")
		return
	}
	s.auditAction(r, "dashboard-save", d.Template, fmt.Sprintf("ok: %d KPIs, %d tiles", len(d.KPIs), len(d.Tiles)))
	writeJSON(w, http.StatusOK, d)
}
