// Package fault holds the fault tests of Calx's store and forward: they
// build the real binary, run a cloud and an edge as separate processes
// with a TCP proxy between them (and Eclipse Mosquitto, for the host on
// another broker), cut the link, kill processes with SIGKILL, restart the
// broker, and check that every value arrives exactly once. Nothing else
// imports it.
package fault
