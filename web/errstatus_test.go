package web

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/store/historian"
	"github.com/calx-iiot/calx/transform"
	"github.com/calx-iiot/calx/uns"
)

// TestStatusOf: every domain error kind answers its status also when
// wrapped, and an error of no known kind is a 500.
func TestStatusOf(t *testing.T) {
	for _, c := range []struct {
		err  error
		want int
	}{
		{cloud.ErrBadAccount, 400}, {cloud.ErrBadConfig, 400}, {cloud.ErrNoSuchEdges, 400},
		{uns.ErrOutOfRange, 400}, {historian.ErrNotAllowed, 400}, {historian.ErrTooManyPoints, 400},
		{cloud.ErrNoAccount, 404}, {cloud.ErrNoVersion, 404}, {transform.ErrNoAlarm, 404}, {historian.ErrUnknownTag, 404},
		{cloud.ErrUserExists, 409}, {cloud.ErrConfigAccount, 409}, {cloud.ErrReadOnly, 409},
		{cloud.ErrWriteTarget, 503},
		{errors.New("disk full"), http.StatusInternalServerError},
		{nil, http.StatusInternalServerError},
	} {
		err := c.err
		if err != nil {
			err = fmt.Errorf("doing it: %w", err)
		}
		if got := statusOf(err); got != c.want {
			t.Errorf("statusOf(%v) = %d, want %d", err, got, c.want)
		}
	}
}
