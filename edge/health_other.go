//go:build !unix

package edge

import "time"

func cpuTime() (time.Duration, bool) { return 0, false }

func diskFree(string) (uint64, bool) { return 0, false }
