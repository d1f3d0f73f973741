package historian

import (
	"cmp"
	"context"
	"time"
)

// Start runs the historian's upkeep until Close: the minute rollups every
// RollupEvery, and the retention rules (export to the archive, then
// delete) every RetentionEvery. ctx is not kept. Calling it twice starts
// nothing more.
func (h *Historian) Start(ctx context.Context) {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	if h.stopMaintain != nil {
		return
	}
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.maintain(mctx)
	}()
	h.stopMaintain = func() { cancel(); <-done }
}

func (h *Historian) maintain(ctx context.Context) {
	roll := time.NewTicker(cmp.Or(h.opts.RollupEvery, 2*time.Second))
	defer roll.Stop()
	every := cmp.Or(h.opts.RetentionEvery, time.Hour)
	next := time.Now().Add(min(time.Minute, every))
	nextCompact := time.Now() // closed hours are rewritten in (tag, ts) order (compact.go)
	for {
		select {
		case <-ctx.Done():
			return
		case <-roll.C:
		}
		h.RollupPass(ctx)
		if time.Now().After(nextCompact) {
			nextCompact = time.Now().Add(compactEvery)
			h.compactPass(ctx, 4)
			h.hourPass(ctx)
		}
		if len(h.opts.Retention) == 0 || time.Now().Before(next) {
			continue
		}
		next = time.Now().Add(every)
		res, err := h.ApplyRetention(ctx, h.opts.Retention, time.Now())
		if err != nil {
			if ctx.Err() == nil {
				h.log.Error("retention failed; trying again later", "err", err)
			}
			continue
		}
		if res != (RetentionResult{}) {
			h.log.Info("retention applied", "exported", res.Exported, "deleted", res.Deleted, "rollups_deleted", res.RollupsDeleted)
		}
	}
}
