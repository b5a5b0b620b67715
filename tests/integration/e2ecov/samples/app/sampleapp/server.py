"""`python -m sampleapp.server --port N [--fail-start] [--never-healthy]`."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sampleapp import handlers

ROUTES = {
    "/alpha": handlers.alpha,
    "/beta": handlers.beta,
    "/work": handlers.work,
    "/forked": handlers.forked,
    "/preexec": handlers.preexec,
    "/loop-spawn": handlers.loop_spawn,
    "/many-forks": handlers.many_forks,
    "/unhooked": handlers.unhooked,
}


class Handler(BaseHTTPRequestHandler):
    never_healthy = False

    def do_GET(self) -> None:
        if self.path == "/health":
            if self.never_healthy:
                self._answer(503, "warming up: cache not loaded")
            else:
                self._answer(200, "ok")
        elif self.path == "/pid":
            self._answer(200, str(os.getpid()))
        elif self.path == "/ppid":
            self._answer(200, str(os.getppid()))
        elif self.path == "/recycle":  # a prefork worker leaves; its master forks another
            self._answer(200, "recycling")
            threading.Timer(0.05, os._exit, (0,)).start()
        elif self.path in ROUTES:
            self._answer(200, ROUTES[self.path]())
        else:
            self._answer(404, "not found")

    def _answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("request " + format % args + "\n")


def _spawn_helper_and_exit(signum: int, frame: object) -> None:
    """SIGTERM: start a helper in its own session (after e2ecov's sweep of the service's
    processes), then end."""
    helper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    print(f"helper on SIGTERM pid {helper.pid}", flush=True)
    time.sleep(0.5)  # the helper announces itself before this process is gone
    sys.exit(0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-start", action="store_true")
    parser.add_argument("--never-healthy", action="store_true")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--spawn-helper", action="store_true")
    parser.add_argument("--spawn-helper-on-sigterm", action="store_true")
    parser.add_argument("--spawn-orphan", action="store_true")
    parser.add_argument("--reexec", action="store_true")
    parser.add_argument("--prefork", action="store_true")
    parser.add_argument("--daemon", action="store_true")
    args = parser.parse_args()
    if args.reexec and not os.environ.get("SAMPLE_REEXECED"):  # as a launcher script does
        handlers.before_exec()
        os.environ["SAMPLE_REEXECED"] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "sampleapp.server", *sys.argv[1:]])
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.fail_start:
        print("loading configuration", flush=True)
        print("error: database url missing (SAMPLE_DB)", file=sys.stderr, flush=True)
        print(f"exiting at {time.time():.3f}", flush=True)
        sys.exit(3)
    if args.spawn_helper:  # a helper in its own session, outside the service's process group
        helper = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
        )
        print(f"helper pid {helper.pid}", flush=True)
    if args.spawn_helper_on_sigterm:  # as a server handing its queue to a drain process
        signal.signal(signal.SIGTERM, _spawn_helper_and_exit)
    if args.spawn_orphan:  # new session, empty environment, and its parent (sh) exits at once
        script = f"env -i setsid {sys.executable} -c 'import time; time.sleep(300)' "
        started = subprocess.run(
            ["sh", "-c", script + ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True
        )
        print(f"orphan pid {started.stdout.strip()}", flush=True)
    if args.daemon and os.fork() > 0:  # as gunicorn --daemon: the server goes on detached
        os._exit(0)
    if args.daemon:
        os.setsid()
    Handler.never_healthy = args.never_healthy
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on {args.port}", flush=True)
    while args.prefork:  # as gunicorn's master: a worker serves the socket, and is replaced
        worker = os.fork()
        if worker == 0:
            break
        os.waitpid(worker, 0)
    server.serve_forever()


if __name__ == "__main__":
    main()
