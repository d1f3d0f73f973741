//go:build !unix

package main

import "errors"

// reexec is not possible here: run the edge with --supervise or under a
// service manager that restarts it.
func reexec(string) error {
	return errors.New("restart for an update: run calx edge --supervise or under a service manager that restarts it")
}
