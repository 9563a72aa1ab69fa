"""Seams for the loop tests: a scripted server on a real loopback HTTP port, a scripted
collector."""

from __future__ import annotations

import gzip
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from smartmon import wire


@dataclass
class Answer:
    """A scripted HTTP answer."""

    status: int
    body: dict[str, object] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def error_answer(status: int, detail: str = "scripted", **headers: str) -> Answer:
    """An error answer to queue in FakeServer.answers (retry_after= becomes Retry-After)."""
    return Answer(
        status,
        {"error": "fake", "detail": detail},
        {k.replace("_", "-"): v for k, v in headers.items()},
    )


class FakeServer:
    """Enrollment and ingest with reportId dedupe, plus switches for outages and errors."""

    def __init__(self, token: str = "smt_enroll") -> None:  # noqa: S107 - a test token
        self.token = token
        self.keys: set[str] = set()
        self.stored: list[wire.Report] = []
        self.attempts: list[tuple[float, str]] = []
        self.down = False  # requests get no answer at all: the connection is dropped
        self.close_idle = False  # close every connection after answering, without saying so
        self.answers: list[Answer] = []
        self.url = ""
        self._key_numbers = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def seqs(self) -> list[int]:
        """seq of every stored report, in arrival order."""
        return [report.seq for report in self.stored]

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        """The answer to one POST, or None to drop the connection unanswered."""
        with self._lock:
            self.attempts.append((time.monotonic(), path))
            if self.down:
                return None
            if self.answers:
                return self.answers.pop(0)
            bearer = headers.get("authorization", "").removeprefix("Bearer ")
            if path == "/api/monitor/register":
                if bearer != self.token:
                    return error_answer(401, "the enrollment token is unknown")
                key = f"smd_{next(self._key_numbers)}"
                self.keys.add(key)
                return Answer(200, {"deviceId": 1, "deviceKey": key})
            if path == "/api/monitor/connections":
                if bearer not in self.keys:
                    return error_answer(401, "the device key is revoked")
                if headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                report = wire.decode_report(body)
                duplicate = any(stored.report_id == report.report_id for stored in self.stored)
                if not duplicate:
                    self.stored.append(report)
                return Answer(200, {"reportId": report.report_id, "duplicate": duplicate})
            return error_answer(404, "no such route")

    @contextmanager
    def running(self) -> Iterator[str]:
        """Serve on a loopback port; yields the base URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm
                # and the client's delayed ACK add 40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {name.lower(): value for name, value in self.headers.items()}
                answer = fake.handle(self.path, headers, body)
                if answer is None:
                    self.close_connection = True
                    return
                content = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(content)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(content)
                if fake.close_idle:
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        try:
            yield self.url
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


class ScriptedCollector:
    """Returns one fixed connection per poll and runs a hook after each poll."""

    def __init__(self, after_poll: Callable[[int], None] | None = None) -> None:
        self.polls = 0
        self.after_poll = after_poll
        self.capabilities = wire.Capabilities(collector="netlink", counters=True, processes="all")

    def poll(self) -> tuple[list[wire.Connection], list[wire.Connection]]:
        """One ESTABLISHED connection whose source port is the poll number."""
        self.polls += 1
        connection = wire.Connection(
            "TCP", "10.0.0.2", 1000 + self.polls, "10.0.0.1", 443, "ESTABLISHED", bytes_in=1
        )
        if self.after_poll is not None:
            self.after_poll(self.polls)
        return [connection], []

    def close(self) -> None:
        """Nothing to release."""
