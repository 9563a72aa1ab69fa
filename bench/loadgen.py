"""A small HTTP/1.1 keep-alive load generator on asyncio streams (loopback only).

httpx costs more CPU per request than the server under test on this 2-core machine, so the
generator would be the bottleneck; this one sends pre-built requests and parses only the
status line and Content-Length, a few microseconds each.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def build_request(url: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """Raw bytes of one POST request."""
    host = urlsplit(url).netloc
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Result:
    """Latencies (seconds) and statuses of one run."""

    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Requests answered per second."""
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency percentile in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def p50(self) -> float:
        """Median latency (ms)."""
        return 1000 * statistics.median(self.latencies) if self.latencies else float("nan")


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def run_load(
    url: str,
    requests: Callable[[int], bytes],
    *,
    connections: int,
    total: int,
    rate: float | None = None,
) -> Result:
    """Send `total` requests over `connections` keep-alive connections.

    requests(i) gives the bytes of request i. With `rate`, requests start on a fixed
    schedule (open loop, latency includes queueing); without, each connection sends as fast
    as it is answered (closed loop, for throughput).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    if host not in LOOPBACK:
        raise ValueError("load tests only ever target loopback addresses")
    result = Result(0.0)
    counter = iter(range(total))
    start = time.perf_counter()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            for i in counter:
                due = start + i / rate if rate else None
                if due is not None:
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                began = due if due is not None else time.perf_counter()
                writer.write(requests(i))
                status = await _read_response(reader)
                result.latencies.append(time.perf_counter() - began)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(connections)))
    result.seconds = time.perf_counter() - start
    return result


def summary(name: str, result: Result) -> dict[str, float | str]:
    """One row of a results table."""
    return {
        "name": name,
        "rate": round(result.rate, 1),
        "p50_ms": round(result.p50, 2),
        "p99_ms": round(result.percentile(99), 2),
        "ok": sum(n for s, n in result.statuses.items() if s == 200),
        "errors": sum(n for s, n in result.statuses.items() if s != 200),
    }


def ratio(a: float, b: float) -> float:
    """a / b rounded, nan-safe."""
    return round(a / b, 3) if b else float("nan")


def table(rows: Sequence[dict[str, float | str]]) -> str:
    """A Markdown table of result rows."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
