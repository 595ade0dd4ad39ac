"""A threaded HTTP server on 127.0.0.1 for adapter tests (bounded: stopped by the fixture)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class QuietHandler(BaseHTTPRequestHandler):
    """Base request handler of the test servers: logs nothing; reads a body, sends a reply."""

    def log_message(self, *args) -> None:
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers["Content-Length"]))

    def reply(self, code: int, body: bytes | str | dict | list, headers: dict[str, str] | None = None) -> None:
        """Status ``code`` with ``body``: JSON (and its content type) for a dict or list, else as is."""
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            headers = {**(headers or {}), "Content-Type": "application/json"}
        else:
            data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LoopbackServer:
    """Serves ``handler`` on an ephemeral loopback port; ``url`` = base address + ``path``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], path: str = "") -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
