"""Seams for the loop tests: a server behind httpx.MockTransport and a scripted collector."""

from __future__ import annotations

import gzip
import itertools
import time
from collections.abc import Callable

import httpx

from smartmon import wire


class FakeServer:
    """Enrollment and ingest with reportId dedupe, plus switches for outages and errors."""

    def __init__(self, token: str = "smt_enroll") -> None:  # noqa: S107 - a test token
        self.token = token
        self.keys: set[str] = set()
        self.stored: list[wire.Report] = []
        self.attempts: list[tuple[float, str]] = []
        self.down = False
        self.answers: list[httpx.Response] = []
        self._key_numbers = itertools.count(1)

    def transport(self) -> httpx.MockTransport:
        """The transport to give a Client."""
        return httpx.MockTransport(self)

    @property
    def seqs(self) -> list[int]:
        """seq of every stored report, in arrival order."""
        return [report.seq for report in self.stored]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.attempts.append((time.monotonic(), request.url.path))
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.answers:
            return self.answers.pop(0)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if request.url.path == "/api/monitor/register":
            if bearer != self.token:
                return _error(401, "the enrollment token is unknown")
            key = f"smd_{next(self._key_numbers)}"
            self.keys.add(key)
            return httpx.Response(200, json={"deviceId": 1, "deviceKey": key})
        if request.url.path == "/api/monitor/connections":
            if bearer not in self.keys:
                return _error(401, "the device key is revoked")
            body = request.content
            if request.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            report = wire.decode_report(body)
            duplicate = any(stored.report_id == report.report_id for stored in self.stored)
            if not duplicate:
                self.stored.append(report)
            return httpx.Response(200, json={"reportId": report.report_id, "duplicate": duplicate})
        return _error(404, "no such route")


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": "fake", "detail": detail}, headers=headers)


def error_answer(status: int, detail: str = "scripted", **headers: str) -> httpx.Response:
    """An error response to queue in FakeServer.answers."""
    return _error(status, detail, {k.replace("_", "-"): v for k, v in headers.items()})


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
