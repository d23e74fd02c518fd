"""Real parts for the teacher tests: a ``transformers serve`` process on the bundled student, and a fault
injecting HTTP proxy on 127.0.0.1 that sits in front of it.

The proxy answers each POST with the next action of its schedule (in arrival order; ``ok`` once the schedule
is used up): ``ok`` forwards to the upstream server, ``429`` (with ``Retry-After``), ``500``, ``404``, ``drop``
(closes the connection without an answer), ``slow`` (waits ``slow_s`` and then drops). ``rules`` map a
substring of the request body to an action taken every time it matches (before the schedule). With
``require_key`` set it answers 401 to any other ``Authorization``. It counts what it received and forwarded.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback only)
        return resp.status


@contextmanager
def transformers_serve(model_dir: Path, log_path: Path, start_timeout: float = 300.0) -> Iterator[str]:
    """Run ``transformers serve <model_dir>`` on a free loopback port; yields its base URL (``.../v1``)."""
    port = free_port()
    exe = Path(sys.executable).parent / "transformers"
    cmd = [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    # One thread: the test machine has two cores shared with other work; more threads only contend.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if _get(f"{base}/health") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"transformers serve did not come up in {start_timeout:.0f} s")
            time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


class FaultProxy:
    def __init__(
        self,
        upstream: str | None,
        schedule: list[str] | None = None,
        *,
        retry_after: str = "1",
        slow_s: float = 5.0,
        require_key: str | None = None,
        rules: dict[str, str] | None = None,
    ):
        self.upstream = urlparse(upstream) if upstream else None
        self.schedule = list(schedule or [])
        self.retry_after = retry_after
        self.slow_s = slow_s
        self.require_key = require_key
        self.rules = dict(rules or {})
        self.received = 0
        self.forwarded = 0
        self.actions: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def reset(self, schedule: list[str] | None = None, rules: dict[str, str] | None = None) -> None:
        with self._lock:
            self.schedule = list(schedule or [])
            self.rules = dict(rules or {})
            self.received = self.forwarded = 0
            self.actions = []

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _next_action(self, body: bytes) -> str:
        text = body.decode("utf-8", "replace")
        with self._lock:
            self.received += 1
            rule = next((a for needle, a in self.rules.items() if needle in text), None)
            action = rule or (self.schedule.pop(0) if self.schedule else "ok")
            self.actions.append(action)
            return action

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _drop(self) -> None:
                # RST instead of FIN: the client sees a dropped connection, not an answer.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if proxy.require_key is not None and self.headers.get("Authorization") != (
                    f"Bearer {proxy.require_key}"
                ):
                    with proxy._lock:
                        proxy.received += 1
                        proxy.actions.append("401")
                    self._reply(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_key"}})
                    return
                action = proxy._next_action(body)
                if action == "429":
                    self._reply(429, {"error": {"message": "rate limited"}}, {"Retry-After": proxy.retry_after})
                elif action == "500":
                    self._reply(500, {"error": {"message": "internal error"}})
                elif action == "404":
                    self._reply(404, {"detail": "Not Found"})
                elif action == "drop":
                    self._drop()
                elif action == "slow":
                    time.sleep(proxy.slow_s)
                    self._drop()
                else:
                    self._forward(body)

            def _forward(self, body: bytes) -> None:
                assert proxy.upstream is not None
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=600)
                try:
                    conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    data = resp.read()
                    with proxy._lock:
                        proxy.forwarded += 1
                    self.send_response(resp.status)
                    self.send_header("Content-Type", resp.getheader("Content-Type") or "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    conn.close()

        return Handler
