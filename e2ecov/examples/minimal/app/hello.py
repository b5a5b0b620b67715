"""A small HTTP service to measure: `python app/hello.py --port 8080`.

Standard library only, so the example needs nothing but e2ecov (and pytest for its tests).
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def greet(name: str) -> str:
    if not name:
        return "hello, stranger"
    return f"hello, {name}"


def farewell(name: str) -> str:
    return f"goodbye, {name or 'stranger'}"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        name = parse_qs(url.query).get("name", [""])[0]
        if url.path == "/health":
            self.answer(200, "ok")
        elif url.path == "/hello":
            self.answer(200, greet(name))
        elif url.path == "/bye":
            self.answer(200, farewell(name))
        else:
            self.answer(404, "not found")

    def answer(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
