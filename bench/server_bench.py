"""Dashboard list latency with a large fleet, and POST-to-stream event latency.

Dashboard: GET /api/dashboard/users with 10,000 devices (each with one report), against a
trivial GET of the same server (the HTTP floor) and against msgspec encoding the same
10,000 devices alone (the serialisation floor).

Stream: an admin holds GET /api/stream open while reports arrive from other devices in the
background; for each measured report, the time from sending the POST to receiving its
`device` event on the WebSocket, beside the POST's own round trip (its acknowledgement).

Run: python -m bench.server_bench [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
import websockets

from bench.ingest_bench import INGEST_PATH, BenchServer, DeviceTraffic, enroll
from bench.loadgen import build_request, run_load
from bench.report import Figure, Section
from smartmon import api

LIST_TARGET_MS = 1000.0  # a full 10,000-device list within a second
STREAM_P95_TARGET_MS = 50.0


def percentile(values: list[float], p: float) -> float:
    """p-th percentile of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _populate(url: str, keys: list[str]) -> list[DeviceTraffic]:
    rng = random.Random(11)
    traffic = [DeviceTraffic(i, rng) for i in range(len(keys))]
    headers = [
        {
            "Authorization": f"Bearer {k}",
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        for k in keys
    ]
    requests = [
        build_request(url, INGEST_PATH, t.next_body(), h)
        for t, h in zip(traffic, headers, strict=True)
    ]
    await run_load(url, requests.__getitem__, connections=32, total=len(requests))
    return traffic


async def _dashboard(url: str, token: str, rounds: int) -> dict[str, float]:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await http.get("/api/dashboard/users", headers=headers)  # warm caches
        list_ms, health_ms, encode_ms = [], [], []
        body = b""
        for _ in range(rounds):
            t0 = time.perf_counter()
            r = await http.get("/api/dashboard/users", headers=headers)
            list_ms.append(1000 * (time.perf_counter() - t0))
            body = r.content
            t0 = time.perf_counter()
            await http.get("/api/health")
            health_ms.append(1000 * (time.perf_counter() - t0))
        listing = msgspec.json.decode(body, type=api.DeviceList)
        for _ in range(rounds):
            t0 = time.perf_counter()
            msgspec.json.encode(listing)
            encode_ms.append(1000 * (time.perf_counter() - t0))
    return {
        "devices": len(listing.data),
        "list_ms": statistics.median(list_ms),
        "health_ms": statistics.median(health_ms),
        "encode_ms": statistics.median(encode_ms),
        "bytes": len(body),
    }


async def _stream(
    url: str, token: str, keys: list[str], traffic: list[DeviceTraffic], samples: int
) -> dict[str, float]:
    """Latency from POST to the device's event on the stream, with background ingest."""
    ws_url = url.replace("http://", "ws://") + "/api/stream"
    measured, background = keys[0], keys[1:]
    headers = {
        "Authorization": f"Bearer {measured}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    event_latency: list[float] = []
    ack_latency: list[float] = []
    async with websockets.connect(
        ws_url, additional_headers={"authorization": f"Bearer {token}"}, max_size=None
    ) as ws:
        hello = api.decode_event(await ws.recv())
        assert isinstance(hello, api.HelloEvent)
        measured_id = min(d.id for d in hello.devices)  # enrolled first
        bg_requests = [
            build_request(
                url, INGEST_PATH, traffic[1 + i % len(background)].next_body(),
                {"Authorization": f"Bearer {background[i % len(background)]}",
                 "Content-Type": "application/json", "Content-Encoding": "gzip"},
            )
            for i in range(samples * 10)
        ]  # fmt: skip
        load = asyncio.create_task(
            run_load(url, bg_requests.__getitem__, connections=8, total=len(bg_requests), rate=200)
        )
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            for _ in range(samples):
                body = traffic[0].next_body()
                t0 = time.perf_counter()
                post = asyncio.create_task(http.post(INGEST_PATH, content=body, headers=headers))
                while True:
                    event = api.decode_event(await asyncio.wait_for(ws.recv(), 10))
                    if isinstance(event, api.DeviceEvent) and event.device.id == measured_id:
                        event_latency.append(1000 * (time.perf_counter() - t0))
                        break
                response = await post
                assert response.status_code == 200, response.text
                ack_latency.append(1000 * (response.elapsed.total_seconds()))
                await asyncio.sleep(0.02)
        load.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await load
    return {
        "event_p50": statistics.median(event_latency),
        "event_p95": percentile(event_latency, 95),
        "ack_p50": statistics.median(ack_latency),
        "ack_p95": percentile(ack_latency, 95),
    }


def run(devices: int, rounds: int, samples: int) -> dict[str, dict[str, float]]:
    """Both measurements on one server."""
    with tempfile.TemporaryDirectory(prefix="smartmon-bench-") as tmp:
        server = BenchServer(Path(tmp) / "data")
        try:
            keys, token = enroll(server.url, devices)

            async def scenario() -> dict[str, dict[str, float]]:
                traffic = await _populate(server.url, keys)
                dashboard = await _dashboard(server.url, token, rounds)
                stream = await _stream(server.url, token, keys, traffic, samples)
                return {"dashboard": dashboard, "stream": stream}

            return asyncio.run(scenario())
        finally:
            server.stop()


def section(quick: bool) -> Section:
    """Both benchmarks as a section of docs/benchmarks.md."""
    devices, rounds, samples = (50, 3, 20) if quick else (10_000, 15, 200)
    result = run(devices, rounds, samples)
    d, s = result["dashboard"], result["stream"]
    return Section(
        title="Dashboard list and live stream",
        command="python -m bench.server_bench" + (" --quick" if quick else ""),
        figures=[
            Figure(
                f"dashboard list, {int(d['devices'])} devices (median)",
                d["list_ms"],
                "ms",
                "msgspec encode of the same list",
                d["encode_ms"],
                f"< {LIST_TARGET_MS:.0f} ms",
                d["list_ms"] < LIST_TARGET_MS,
            ),
            Figure("trivial GET on the same server (median)", d["health_ms"], "ms"),
            Figure(
                "POST -> stream event p95",
                s["event_p95"],
                "ms",
                "POST round trip p95",
                s["ack_p95"],
                f"<= {STREAM_P95_TARGET_MS:.0f} ms",
                s["event_p95"] <= STREAM_P95_TARGET_MS,
            ),
            Figure(
                "POST -> stream event p50",
                s["event_p50"],
                "ms",
                "POST round trip p50",
                s["ack_p50"],
            ),
        ],
        details=(
            f"The list body is {d['bytes'] / 1e6:.1f} MB of JSON. Stream latency is measured on one"
            f" device's reports ({samples} samples) while other devices post 200 reports/s."
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    from bench.report import figures_table

    result = section(args.quick)
    print(figures_table(result.figures))
    print(result.details)


if __name__ == "__main__":
    main()
