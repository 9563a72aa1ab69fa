"""Delivering one report: what is retried, what is final, and the backoff."""

from __future__ import annotations

import gzip
import random
from datetime import UTC, datetime

import httpx
import pytest

from smartmon import wire
from smartmon.agent.delivery import BACKOFF_CAP_S, Backoff, compress, post_compressed
from smartmon.client import Client

REPORT = wire.Report(
    report_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    seq=7,
    collected_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    interval_s=10,
    connections=[wire.Connection("TCP", "10.0.0.2", 40000, "10.0.0.1", 443, "ESTABLISHED")],
)


def _client(handler: httpx.MockTransport) -> Client:
    return Client("http://agent.test", transport=handler)


def test_the_report_goes_out_gzip_compressed_with_the_device_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"reportId": REPORT.report_id, "duplicate": False})

    with _client(httpx.MockTransport(handler)) as client:
        delivery = post_compressed(client, "smd_key", compress(REPORT))

    assert delivery.verdict == "sent" and not delivery.duplicate
    request = seen[0]
    assert request.url.path == "/api/monitor/connections"
    assert request.headers["authorization"] == "Bearer smd_key"
    assert request.headers["content-encoding"] == "gzip"
    assert wire.decode_report(gzip.decompress(request.content)) == REPORT


def test_a_duplicate_counts_as_delivered() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, json={"reportId": "x", "duplicate": True})
    )
    with _client(transport) as client:
        delivery = post_compressed(client, "smd_key", compress(REPORT))

    assert (delivery.verdict, delivery.duplicate) == ("sent", True)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (500, "retry"),
        (502, "retry"),
        (503, "retry"),
        (429, "retry"),
        (401, "auth"),
        (403, "auth"),
        (400, "refused"),
        (404, "refused"),
        (413, "refused"),
        (422, "refused"),
    ],
)
def test_error_statuses(status: int, verdict: str) -> None:
    body = {"error": "nope", "detail": "the server says no"}
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    with _client(transport) as client:
        delivery = post_compressed(client, "smd_key", compress(REPORT))

    assert (delivery.verdict, delivery.status) == (verdict, status)
    assert "the server says no" in delivery.reason


def test_retry_after_is_passed_on() -> None:
    transport = httpx.MockTransport(
        lambda request: httpx.Response(429, headers={"retry-after": "7"}, json={})
    )
    with _client(transport) as client:
        delivery = post_compressed(client, "smd_key", compress(REPORT))

    assert (delivery.verdict, delivery.retry_after) == ("retry", 7.0)


@pytest.mark.parametrize(
    "error", [httpx.ConnectError, httpx.ReadTimeout, httpx.RemoteProtocolError]
)
def test_no_answer_is_retried(error: type[httpx.TransportError]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("no answer", request=request)

    with _client(httpx.MockTransport(handler)) as client:
        delivery = post_compressed(client, "smd_key", compress(REPORT))

    assert (delivery.verdict, delivery.status) == ("retry", None)


def test_an_answer_that_is_not_an_ingest_result_is_retried() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"hello": 1}))
    with _client(transport) as client:
        delivery = post_compressed(client, "smd_key", compress(REPORT))

    assert delivery.verdict == "retry"


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(rng=random.Random(1))

    delays = [backoff.next_delay() for _ in range(12)]

    for attempt, delay in enumerate(delays):
        ceiling = min(BACKOFF_CAP_S, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 30.0
    assert len(set(delays)) == len(delays)  # jittered, not a fixed ladder


def test_retry_after_wins_when_longer_and_reset_starts_over() -> None:
    backoff = Backoff(rng=random.Random(2))

    assert backoff.next_delay(retry_after=12.5) == 12.5
    assert backoff.next_delay(retry_after=0.0) <= 2.0
    backoff.reset()
    assert backoff.next_delay() <= 1.0
    assert backoff.next_delay(retry_after=10**9) <= 600  # a confused server cannot mute it


def test_thousands_of_failures_stay_at_the_cap() -> None:
    backoff = Backoff()
    for _ in range(5_000):
        delay = backoff.next_delay()
    assert BACKOFF_CAP_S / 2 <= delay <= BACKOFF_CAP_S
