package main

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"github.com/calx-iiot/calx/cloud"
	"github.com/calx-iiot/calx/edge"
)

// The example configs are published: their passwords (change-me-admin,
// change-me-ghent, change-me-reader) and these hashes of them are known to
// anyone. A test holds this list to examples/cloud.yaml.
var (
	examplePasswords = []string{"change-me-admin", "change-me-ghent", "change-me-reader", "change-me"}
	exampleHashes    = []string{
		"$2a$10$rpcQseowua1TRqPMsvrbs.ITkvPsAgzMpUEm4dfYlQ4hKTZyyRb3K",
		"$2a$10$/Pqxkw9LekJd4tMNxId2/OroREud5.rsDoGovFeq8y80QJ5J22Cle",
		"$2a$10$eEdJ28Zqx9zzVHcqg0EA9.pPOgTNcW32sQapN15ubR4iB0u8oR7Ga",
	}
)

// exampleCloudAccounts lists the accounts of a cloud config that still
// have a published example password.
func exampleCloudAccounts(cfg *cloud.Config) []string {
	var out []string
	for _, u := range cfg.Users {
		if slices.Contains(exampleHashes, u.PasswordHash) {
			out = append(out, "user "+u.Username)
		}
	}
	for _, u := range cfg.MQTTUsers() {
		if slices.Contains(exampleHashes, u.PasswordHash) {
			out = append(out, "mqtt "+u.Username)
		}
	}
	for _, u := range cfg.NATS.Users {
		if slices.Contains(exampleHashes, u.PasswordHash) {
			out = append(out, "nats "+u.Username)
		}
	}
	return out
}

// warnExamples says, loudly, on the log and on the terminal, which
// accounts anyone who has read the examples can log in with.
func warnExamples(log *slog.Logger, stderr io.Writer, accounts []string) {
	if len(accounts) == 0 {
		return
	}
	log.Warn("accounts with a published example password: anyone who read the examples can log in with them; set your own", "accounts", accounts)
	fmt.Fprintf(stderr, "\nWARNING: these accounts still have a published example password: %s.\n"+
		"Anyone who has read the examples can log in with them. Set passwords of your own (calx hash-password).\n\n", strings.Join(accounts, ", "))
}

// exampleEdgeAccounts lists the credentials of an edge config that are a
// published example password.
func exampleEdgeAccounts(cfg *edge.Config, password string) []string {
	if slices.Contains(examplePasswords, password) {
		return []string{"cloud " + cfg.Cloud.Username}
	}
	return nil
}
