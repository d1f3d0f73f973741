// Package security holds Calx's suite of attacks: one table of what a
// hostile client on a site LAN, or one with a leaked credential, tries
// against the real broker, backbone port and HTTP server of a cloud (and
// the site broker of an edge) on loopback, each with the refusal it must
// meet and the counter, log or audit line that records it. The threat
// model and every limit are in docs/SECURITY.md. It has no code of its
// own beyond its tests.
package security
