package web

import (
	"errors"
	"net/http"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/store/historian"
	"github.com/calx-iiot/calx/transform"
	"github.com/calx-iiot/calx/uns"
)

// errorStatuses maps the domain's error kinds to the HTTP status an API
// call that failed with one of them answers.
var errorStatuses = []struct {
	err    error
	status int
}{
	{cloud.ErrBadAccount, http.StatusBadRequest},
	{cloud.ErrBadConfig, http.StatusBadRequest},
	{cloud.ErrBadDashboard, http.StatusBadRequest},
	{cloud.ErrNoSuchEdges, http.StatusBadRequest},
	{uns.ErrOutOfRange, http.StatusBadRequest},
	{historian.ErrNotAllowed, http.StatusBadRequest},
	{historian.ErrTooManyPoints, http.StatusBadRequest},
	{cloud.ErrNoAccount, http.StatusNotFound},
	{cloud.ErrNoVersion, http.StatusNotFound},
	{transform.ErrNoAlarm, http.StatusNotFound},
	{historian.ErrUnknownTag, http.StatusNotFound},
	{cloud.ErrUserExists, http.StatusConflict},
	{cloud.ErrConfigAccount, http.StatusConflict},
	{cloud.ErrReadOnly, http.StatusConflict},
	{cloud.ErrWriteTarget, http.StatusServiceUnavailable},
	{cloud.ErrNoTransforms, http.StatusServiceUnavailable},
}

// statusOf is the HTTP status of err: that of its domain kind, or 500 for
// an error of no known kind (whose text the caller does not show).
func statusOf(err error) int {
	for _, e := range errorStatuses {
		if errors.Is(err, e.err) {
			return e.status
		}
	}
	return http.StatusInternalServerError
}
