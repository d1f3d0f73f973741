//go:build linux

package main

import "syscall"

// childAttr makes the edge process stop when its supervisor dies, so that
// a supervisor started again never finds the edge still running.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
