"""A tiny API for the compose demo: some 200s, some 404s, a 500 and a slow endpoint.

Runs with the standard library only (python:3.12-slim). It shares the portcullis container's
network namespace, so it listens on loopback and is reachable only through the gateway.

  GET /                 200  {"service": "demo"}
  GET /api/items        200  a small JSON list
  GET /api/items/N      200 for N in 1..3, else 404
  GET /slow?ms=N        200  after N milliseconds (default 500, at most 10000)
  GET /error            500
  anything else         404  (counts toward a ban: offense_status = [403, 404, 444])
"""

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

ITEMS = [{"id": i, "name": f"item {i}"} for i in (1, 2, 3)]


class Handler(BaseHTTPRequestHandler):
    server_version = "demo-upstream/1"
    protocol_version = "HTTP/1.1"  # keep-alive, as portcullis pools upstream connections

    def _send(self, status, body):
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        client = self.headers.get("X-Real-IP", "?")
        if path == "/":
            return self._send(200, {"service": "demo", "client": client})
        if path == "/api/items":
            return self._send(200, ITEMS)
        if path.startswith("/api/items/"):
            key = path.rsplit("/", 1)[1]
            for item in ITEMS:
                if str(item["id"]) == key:
                    return self._send(200, item)
            return self._send(404, {"error": "no such item"})
        if path == "/slow":
            try:
                ms = int(parse_qs(url.query).get("ms", ["500"])[0])
            except ValueError:
                ms = 500
            time.sleep(min(max(ms, 0), 10_000) / 1000)
            return self._send(200, {"slept_ms": ms})
        if path == "/error":
            return self._send(500, {"error": "simulated failure"})
        return self._send(404, {"error": "not found"})

    do_HEAD = do_GET

    def log_message(self, fmt, *args):
        sys.stderr.write("demo-upstream: " + (fmt % args) + "\n")


if __name__ == "__main__":
    addr = os.environ.get("DEMO_LISTEN", "127.0.0.1")
    port = int(os.environ.get("DEMO_PORT", "8000"))
    print(f"demo-upstream listening on {addr}:{port}", file=sys.stderr, flush=True)
    ThreadingHTTPServer((addr, port), Handler).serve_forever()
