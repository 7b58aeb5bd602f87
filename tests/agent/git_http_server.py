"""A loopback git smart-HTTP server (`git http-backend`) that demands a GitHub-style token.

Like github.com, it accepts `Authorization: Basic base64("x-access-token:<token>")` and answers
401 with a Basic challenge otherwise. Every request's Authorization header and URL are recorded
so tests can check where the token travelled.
"""

from __future__ import annotations

import base64
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class GitHttpLog:
    urls: list[str] = field(default_factory=list)
    refused: int = 0


@contextmanager
def serve_git_http(root: Path, token: str) -> Iterator[tuple[str, GitHttpLog]]:
    """Serve the bare repositories under `root`; yields (base URL, request log)."""
    expected = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
    log = GitHttpLog()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def _serve(self) -> None:
            log.urls.append(self.path)
            if self.headers.get("Authorization") != expected:
                log.refused += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": "x-access-token",
                "REMOTE_ADDR": "127.0.0.1", "PATH": "/usr/bin:/bin",
            }  # fmt: skip
            output = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
            ).stdout
            head, _, payload = output.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        thread.join(timeout=10)
