"""Delivering one report: what is retried, what is final, and the backoff."""

from __future__ import annotations

import gzip
import random
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import msgspec
import pytest
from agent_fakes import Answer, FakeServer, error_answer

from smartmon import wire
from smartmon.agent.delivery import BACKOFF_CAP_S, Backoff, post_compressed
from smartmon.agent.report import compress
from smartmon.agent.sender import Sender

REPORT = wire.Report(
    report_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    seq=7,
    collected_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    interval_s=10,
    connections=[wire.Connection("TCP", "10.0.0.2", 40000, "10.0.0.1", 443, "ESTABLISHED")],
)


@pytest.fixture
def server() -> FakeServer:
    """A scripted server that knows the device key smd_key."""
    fake = FakeServer()
    fake.keys.add("smd_key")
    return fake


@pytest.fixture
def sender(server: FakeServer) -> Iterator[Sender]:
    """A sender talking to the scripted server over loopback."""
    with server.running() as url:
        talking = Sender(url, timeout=5)
        try:
            yield talking
        finally:
            talking.close()


def test_the_report_goes_out_gzip_compressed_with_the_device_key(
    server: FakeServer, sender: Sender
) -> None:
    seen: list[dict[str, str]] = []
    handle = server.handle

    def spy(path: str, headers: dict[str, str], body: bytes) -> Answer | None:
        seen.append(headers)
        return handle(path, headers, body)

    server.handle = spy  # type: ignore[method-assign]

    delivery = post_compressed(sender, "smd_key", compress(REPORT))

    assert delivery.verdict == "sent" and not delivery.duplicate
    assert server.stored == [REPORT]
    assert seen[0]["authorization"] == "Bearer smd_key"
    assert seen[0]["content-encoding"] == "gzip"
    assert seen[0]["user-agent"].startswith("smartmon-agent/")


def test_compress_is_gzip_of_the_wire_encoding() -> None:
    many = [
        wire.Connection("TCP", "10.0.0.2", port, "10.0.0.1", 443, "ESTABLISHED", bytes_in=port)
        for port in range(1, 1_202)
    ]
    closed = many[:3]
    for report in (REPORT, msgspec.structs.replace(REPORT, connections=many, closed=closed),
                   msgspec.structs.replace(REPORT, connections=[])):  # fmt: skip
        assert gzip.decompress(compress(report)) == wire.encode(report)


def test_a_duplicate_counts_as_delivered(server: FakeServer, sender: Sender) -> None:
    assert post_compressed(sender, "smd_key", compress(REPORT)).verdict == "sent"

    delivery = post_compressed(sender, "smd_key", compress(REPORT))

    assert (delivery.verdict, delivery.duplicate) == ("sent", True)
    assert len(server.stored) == 1


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
def test_error_statuses(server: FakeServer, sender: Sender, status: int, verdict: str) -> None:
    server.answers = [error_answer(status, "the server says no")]

    delivery = post_compressed(sender, "smd_key", compress(REPORT))

    assert (delivery.verdict, delivery.status) == (verdict, status)
    assert "the server says no" in delivery.reason


def test_retry_after_is_passed_on(server: FakeServer, sender: Sender) -> None:
    server.answers = [error_answer(429, retry_after="7")]

    delivery = post_compressed(sender, "smd_key", compress(REPORT))

    assert (delivery.verdict, delivery.retry_after) == ("retry", 7.0)


def test_no_answer_is_retried(server: FakeServer, sender: Sender) -> None:
    server.down = True

    delivery = post_compressed(sender, "smd_key", compress(REPORT))

    assert (delivery.verdict, delivery.status) == ("retry", None)


def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    nobody = Sender(f"http://127.0.0.1:{port}")

    delivery = post_compressed(nobody, "smd_key", compress(REPORT))

    assert delivery.verdict == "retry" and "refused" in delivery.reason.lower()


def test_an_answer_that_is_not_an_ingest_result_is_retried(
    server: FakeServer, sender: Sender
) -> None:
    server.answers = [Answer(200, {"hello": 1})]

    delivery = post_compressed(sender, "smd_key", compress(REPORT))

    assert delivery.verdict == "retry"


def test_a_keep_alive_connection_the_server_closed_is_reopened(
    server: FakeServer, sender: Sender
) -> None:
    server.close_idle = True  # closes after each answer without saying so

    first = post_compressed(sender, "smd_key", compress(REPORT))
    later = msgspec.structs.replace(REPORT, seq=8, report_id="1f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    second = post_compressed(sender, "smd_key", compress(later))

    assert (first.verdict, second.verdict) == ("sent", "sent")
    assert server.seqs == [7, 8]


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
