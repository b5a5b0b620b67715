// Package agent lets a Go service built with `go build -cover` answer e2ecov's live save.
//
// Import it for its side effect in the service's main package:
//
//	import _ "e2ecov.invalid/agent"
//
// and point the module at the copy e2ecov ships (a `replace` directive to the `go` directory
// of the installed e2ecov package). Outside an e2ecov run (no E2ECOV_SERVICE or GOCOVERDIR in
// the environment) it does nothing. Under e2ecov it announces the process in e2ecov's ledger,
// then answers `save` on a Unix socket in e2ecov's control directory by writing the coverage
// meta-data and counters into GOCOVERDIR while the service keeps running, so a process that is
// later killed still leaves its coverage; and it saves so by itself every E2ECOV_AUTOSAVE
// seconds (the stack's `autosave`), so a SIGKILL loses at most that much, as in a Python
// service. `context NAME` is acknowledged (Go coverage has no per-test contexts); `status`
// reports the process.
//
// Standard library only; every failure is written to stderr and never stops the service.
package agent

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/coverage"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LiveSuffix names the marker beside a counter file written by a live save.
const LiveSuffix = ".e2ecov-live"

type agent struct {
	service   string
	dir       string // GOCOVERDIR
	ledger    string // this process's ledger file
	pid       int
	mu        sync.Mutex
	wroteMeta bool
	saves     int
	written   []string // counter files this agent wrote (older ones are replaced)
}

func init() {
	service, dir := os.Getenv("E2ECOV_SERVICE"), os.Getenv("GOCOVERDIR")
	control, ledgerDir := os.Getenv("E2ECOV_CONTROL_DIR"), os.Getenv("E2ECOV_LEDGER_DIR")
	if service == "" || dir == "" || control == "" || ledgerDir == "" {
		return
	}
	a := &agent{service: service, dir: dir, pid: os.Getpid()}
	a.ledger = filepath.Join(ledgerDir, fmt.Sprintf("%s.%d.go.jsonl", service, a.pid))
	a.record(map[string]any{
		"event": "start", "service": service, "pid": a.pid, "ppid": os.Getppid(),
		"time": now(), "data_file": dir, "core": "go", "python": runtime.Version(),
		"contexts": false, "argv": os.Args,
	})
	socketPath := filepath.Join(control, fmt.Sprintf("%d.sock", a.pid))
	os.Remove(socketPath) // a process of the same pid before this one left it (pid reuse)
	listener, err := net.Listen("unix", socketPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2ecov agent: cannot listen in %s: %v\n", control, err)
		return
	}
	go a.serve(listener)
	if every, err := strconv.ParseFloat(os.Getenv("E2ECOV_AUTOSAVE"), 64); err == nil && every > 0 {
		go a.autosave(time.Duration(every * float64(time.Second)))
	}
}

// autosave saves every `every` until the process ends (a failed save is told, and the next
// one tried all the same).
func (a *agent) autosave(every time.Duration) {
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	for range ticker.C {
		if reply := a.save("autosave"); reply["ok"] != true {
			fmt.Fprintf(os.Stderr, "e2ecov agent: autosave failed: %v\n", reply["error"])
		}
	}
}

func now() float64 { return float64(time.Now().UnixNano()) / 1e9 }

func (a *agent) record(event map[string]any) {
	line, _ := json.Marshal(event)
	f, err := os.OpenFile(a.ledger, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2ecov agent: ledger: %v\n", err)
		return
	}
	defer f.Close()
	f.Write(append(line, '\n')) // one write: concurrent writers never mix
}

func (a *agent) serve(listener net.Listener) {
	for {
		conn, err := listener.Accept()
		if err != nil {
			return
		}
		go a.answer(conn)
	}
}

func (a *agent) answer(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil && line == "" {
		return
	}
	command, argument, _ := strings.Cut(strings.TrimSpace(line), " ")
	var reply map[string]any
	switch {
	case command == "save":
		reply = a.save("save")
	case command == "context" && argument != "":
		reply = map[string]any{"ok": true, "pid": a.pid, "contexts": false}
	case command == "status":
		reply = map[string]any{"ok": true, "pid": a.pid, "service": a.service, "core": "go",
			"data_file": a.dir, "saves": a.saves}
	default:
		reply = map[string]any{"ok": false, "pid": a.pid,
			"error": fmt.Sprintf("unknown command %q; expected save, context <name>, status", line)}
	}
	out, _ := json.Marshal(reply)
	conn.Write(append(out, '\n'))
}

// save writes the meta-data (once) and the counters now (`reason`: "save" when e2ecov asked,
// "autosave" on the agent's own schedule); the previous counter file this agent
// wrote is removed, since the new one holds everything it did.
func (a *agent) save(reason string) map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.wroteMeta {
		if err := coverage.WriteMetaDir(a.dir); err != nil {
			return map[string]any{"ok": false, "pid": a.pid, "error": err.Error()}
		}
		a.wroteMeta = true
	}
	before := a.counterFiles()
	if err := coverage.WriteCountersDir(a.dir); err != nil {
		return map[string]any{"ok": false, "pid": a.pid, "error": err.Error()}
	}
	for name := range a.counterFiles() {
		if !before[name] {
			for _, old := range a.written {
				os.Remove(old)
				os.Remove(old + LiveSuffix)
			}
			a.written = []string{name}
			// marks a live save: the counters the runtime writes at exit hold these
			// too, so e2ecov leaves this file out when that one exists
			if f, err := os.Create(name + LiveSuffix); err == nil {
				f.Close()
			}
		}
	}
	a.saves++
	at := now()
	a.record(map[string]any{"event": "save", "pid": a.pid, "reason": reason, "time": at,
		"measured": 1, "context": "", "package_dirs": []string{}})
	return map[string]any{"ok": true, "pid": a.pid, "measured": 1, "time": at}
}

func (a *agent) counterFiles() map[string]bool {
	found := map[string]bool{}
	names, _ := filepath.Glob(filepath.Join(a.dir, fmt.Sprintf("covcounters.*.%d.*", a.pid)))
	for _, name := range names {
		if !strings.HasSuffix(name, LiveSuffix) {
			found[name] = true
		}
	}
	return found
}
