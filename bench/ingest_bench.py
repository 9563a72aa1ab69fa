"""Ingest throughput and latency against the HTTP ceiling of the same stack, in one run.

A real `smartmon serve` process (plus a trivial POST endpoint) on a loopback port; many
enrolled devices, each with its own key, send gzip'd reports of 50 connections: 8 listening
sockets that never change, 42 established ones of which a third move bytes in each report,
and 2 replaced by new ones per report (churn). The same bytes go to the trivial endpoint.

Run: python -m bench.ingest_bench [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.bench_server import TRIVIAL_PATH
from bench.loadgen import build_request, ratio, run_load, summary, table
from bench.report import Figure, Section
from smartmon import wire

INGEST_PATH = "/api/monitor/connections"


@dataclass(frozen=True)
class Plan:
    """Sizes of one benchmark run."""

    devices: int
    requests: int
    connections: int

    @classmethod
    def full(cls) -> Plan:
        return cls(devices=1000, requests=12_000, connections=64)

    @classmethod
    def quick(cls) -> Plan:
        return cls(devices=10, requests=200, connections=4)


def free_port() -> int:
    """A free loopback port."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DeviceTraffic:
    """Realistic, deterministic report bodies for one device."""

    def __init__(self, index: int, rng: random.Random) -> None:
        self.rng = rng
        self.source = f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}"
        self.seq = 0
        self.listening = [
            wire.Connection(
                protocol="TCP",
                source_ip="0.0.0.0",
                source_port=p,
                dest_ip="0.0.0.0",
                dest_port=0,
                state="LISTEN",
            )
            for p in (22, 80, 443, 1883, 8080)
        ] + [
            wire.Connection(
                protocol="UDP",
                source_ip="0.0.0.0",
                source_port=p,
                dest_ip="0.0.0.0",
                dest_port=0,
                state="UNCONN",
            )
            for p in (53, 123, 5353)
        ]
        self.established = [self._new_connection() for _ in range(42)]
        self.iface = [0, 0, 0, 0]

    def _new_connection(self) -> wire.Connection:
        return wire.Connection(
            protocol="TCP",
            source_ip=self.source,
            source_port=self.rng.randrange(32768, 61000),
            dest_ip=f"198.51.{self.rng.randrange(0, 4)}.{self.rng.randrange(1, 255)}",
            dest_port=self.rng.choice((443, 8883, 1883, 80)),
            state="ESTABLISHED",
            pid=self.rng.randrange(100, 5000),
            process="meterd",
            bytes_in=0,
            bytes_out=0,
            packets_in=0,
            packets_out=0,
        )

    def next_body(self) -> bytes:
        """The gzip'd JSON of this device's next report."""
        self.seq += 1
        for _ in range(2):  # churn: two connections end, two new ones start
            self.established[self.rng.randrange(len(self.established))] = self._new_connection()
        for c in self.rng.sample(self.established, 14):  # a third move bytes
            grow = self.rng.randrange(100, 5000)
            assert c.bytes_in is not None and c.bytes_out is not None
            assert c.packets_in is not None and c.packets_out is not None
            c.bytes_in += grow
            c.bytes_out += grow // 3
            c.packets_in += 2
            c.packets_out += 1
        self.iface = [v + self.rng.randrange(1000, 50_000) for v in self.iface]
        report = wire.Report(
            report_id=str(uuid.uuid4()),
            seq=self.seq,
            collected_at=datetime.now(UTC),
            interval_s=10,
            agent=wire.AgentInfo(version="bench", os="linux", hostname=self.source),
            interfaces=wire.InterfaceTotals(*self.iface),
            connections=[*self.listening, *self.established],
        )
        return gzip.compress(wire.encode(report), compresslevel=6)


class BenchServer:
    """A `smartmon serve` subprocess with the trivial endpoint, on a fresh data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bench_server",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the bench server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


BENCH_USER = {"username": "bench", "password": "bench-password"}


def enroll(url: str, devices: int) -> tuple[list[str], str]:
    """Register the bench user, enroll devices; their keys and the user's access token."""
    with httpx.Client(base_url=url, timeout=30) as http:
        token = http.post("/api/auth/register", json=BENCH_USER).json()["accessToken"]
        r = http.post(
            "/api/tokens", json={"name": "bench"}, headers={"authorization": f"Bearer {token}"}
        )
        enrollment = r.json()["token"]
        keys = []
        for i in range(devices):
            r = http.post(
                "/api/monitor/register",
                json={"deviceName": f"bench-{i:05d}"},
                headers={"authorization": f"Bearer {enrollment}"},
            )
            keys.append(r.json()["deviceKey"])
    return keys, token


def simulated_fleet(url: str, keys: list[str], total: int) -> tuple[list[bytes], float]:
    """Requests from `smartmon simulate`'s device models (meters and gateways, outages and
    all), one report per online device in turn; and their mean connections per report."""
    from smartmon.simulate.model import DeviceModel

    models = [DeviceModel(i, seed=7, interval_s=10) for i in range(len(keys))]
    requests: list[bytes] = []
    connections = 0
    while len(requests) < total + len(keys):
        for model, key in zip(models, keys, strict=True):
            report = model.tick()
            if report is None:  # offline for a while: it sends nothing
                continue
            connections += len(report.connections)
            body = gzip.compress(wire.encode(report), compresslevel=6)
            headers = {
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            }
            requests.append(build_request(url, INGEST_PATH, body, headers))
    return requests[: total + len(keys)], connections / len(requests)


def run(plan: Plan) -> dict[str, Any]:
    """Run the benchmark; returns rows and ratios."""
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="smartmon-bench-") as tmp:
        server = BenchServer(Path(tmp) / "data")
        try:
            # the first half report DeviceTraffic, the second half smartmon simulate's models
            all_keys, _ = enroll(server.url, 2 * plan.devices)
            keys, simulated_keys = all_keys[: plan.devices], all_keys[plan.devices :]
            traffic = [DeviceTraffic(i, rng) for i in range(plan.devices)]
            headers = [
                {
                    "Authorization": f"Bearer {k}",
                    "Content-Type": "application/json",
                    "Content-Encoding": "gzip",
                }
                for k in keys
            ]
            warmup = [
                build_request(server.url, INGEST_PATH, t.next_body(), h)
                for t, h in zip(traffic, headers, strict=True)
            ]
            bodies = [traffic[i % plan.devices].next_body() for i in range(plan.requests)]
            paced_bodies = [
                traffic[i % plan.devices].next_body() for i in range(plan.requests // 2)
            ]
            ingest = [
                build_request(server.url, INGEST_PATH, b, headers[i % plan.devices])
                for i, b in enumerate(bodies)
            ]
            paced = [
                build_request(server.url, INGEST_PATH, b, headers[i % plan.devices])
                for i, b in enumerate(paced_bodies)
            ]
            trivial = [
                build_request(server.url, TRIVIAL_PATH, b, headers[i % plan.devices])
                for i, b in enumerate(bodies)
            ]
            fleet, fleet_connections = simulated_fleet(server.url, simulated_keys, plan.requests)

            async def scenario() -> dict[str, Any]:
                await run_load(
                    server.url, warmup.__getitem__, connections=plan.connections, total=len(warmup)
                )
                ceiling_a = await run_load(
                    server.url,
                    trivial.__getitem__,
                    connections=plan.connections,
                    total=len(trivial),
                )
                full = await run_load(
                    server.url, ingest.__getitem__, connections=plan.connections, total=len(ingest)
                )
                ceiling_b = await run_load(
                    server.url,
                    trivial.__getitem__,
                    connections=plan.connections,
                    total=len(trivial),
                )
                await run_load(
                    server.url,
                    fleet.__getitem__,
                    connections=plan.connections,
                    total=len(simulated_keys),
                )
                simulated = await run_load(
                    server.url, (lambda i: fleet[len(simulated_keys) + i]), connections=plan.connections,
                    total=len(fleet) - len(simulated_keys),
                )  # fmt: skip
                half_rate = full.rate / 2
                half = await run_load(
                    server.url,
                    paced.__getitem__,
                    connections=plan.connections,
                    total=len(paced),
                    rate=half_rate,
                )
                ceiling_rate = (ceiling_a.rate + ceiling_b.rate) / 2
                return {
                    "rows": [
                        summary("trivial POST (ceiling), run 1", ceiling_a),
                        summary("ingest, closed loop", full),
                        summary("trivial POST (ceiling), run 2", ceiling_b),
                        summary(f"ingest paced at {half_rate:.0f}/s (half)", half),
                        summary(
                            "ingest, simulated fleet (smartmon simulate), closed loop", simulated
                        ),
                    ],
                    "simulated_rate": simulated.rate,
                    "simulated_connections_per_report": fleet_connections,
                    "ingest_rate": full.rate,
                    "ceiling_rate": ceiling_rate,
                    "ratio": ratio(full.rate, ceiling_rate),
                    "connection_updates_per_s": round(full.rate * 50),
                    "half_load_p99_ms": round(half.percentile(99), 2),
                    "errors": sum(
                        n
                        for r in (full, half, simulated)
                        for s, n in r.statuses.items()
                        if s != 200
                    ),
                }

            return asyncio.run(scenario())
        finally:
            server.stop()


TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0


def section(quick: bool) -> Section:
    """The ingest benchmark as a section of docs/benchmarks.md."""
    result = run(Plan.quick() if quick else Plan.full())
    plan = Plan.quick() if quick else Plan.full()
    details = (
        f"{plan.devices} devices with their own keys, {plan.requests} gzip'd reports of 50"
        f" connections each over {plan.connections} keep-alive connections (closed loop), then"
        f" half of the measured ingest rate paced (open loop) for the latency figure. The"
        f" baseline is a trivial POST endpoint of the same server process that parses the"
        f" same bodies (`bench/bench_server.py`). The simulated fleet is `smartmon simulate`'s"
        f" device model (meters, every tenth a gateway, outages, firmware checks) through the"
        f" same load generator.\n\n" + table(result["rows"])
    )
    return Section(
        title="Ingest",
        command="python -m bench.ingest_bench" + (" --quick" if quick else ""),
        figures=[
            Figure(
                "ingest throughput",
                result["ingest_rate"],
                "reports/s",
                "trivial POST",
                result["ceiling_rate"],
                f">= {TARGET_RATIO} x ceiling",
                result["ratio"] >= TARGET_RATIO,
            ),
            Figure(
                "connection updates",
                result["connection_updates_per_s"],
                "/s",
                target="(50 per report)",
            ),
            Figure(
                "ingest throughput, simulated fleet",
                result["simulated_rate"],
                "reports/s",
                "trivial POST",
                result["ceiling_rate"],
                f"({result['simulated_connections_per_report']:.0f} connections per report)",
            ),
            Figure(
                "ingest p99 at half load",
                result["half_load_p99_ms"],
                "ms",
                target=f"< {TARGET_P99_MS:.0f} ms",
                ok=result["half_load_p99_ms"] < TARGET_P99_MS,
            ),
        ],
        details=details,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes (seconds), as the test suite runs it"
    )
    args = parser.parse_args()
    plan = Plan.quick() if args.quick else Plan.full()
    result = run(plan)
    print(table(result["rows"]))
    print(
        f"\ningest {result['ingest_rate']:.0f} reports/s ({result['connection_updates_per_s']} connection"
        f" updates/s) = {result['ratio']:.2f} x the trivial endpoint's {result['ceiling_rate']:.0f} req/s;"
        f" p99 at half load {result['half_load_p99_ms']} ms; errors {result['errors']}"
    )


if __name__ == "__main__":
    main()
