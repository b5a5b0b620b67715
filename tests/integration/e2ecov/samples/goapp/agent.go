//go:build !noagent

package main

// Answers e2ecov's live save (built without it: `go build -tags noagent`).
import _ "e2ecov.invalid/agent"
