"""TUI: applying stream events to a 10,000-device dashboard, with Pilot.

The real dashboard screen (stat cards, device table, filter) runs headless under Pilot with
a fleet delivered as a stream `hello`; then:
- one `device` event: the time to apply it plus re-rendering every visible line (an upper
  bound: Textual redraws only the changed line), with the table sorted by name (rows stay)
  and by inbound rate (the updated row moves);
- a full resync (a `hello` with the whole fleet again, every value changed) plus rendering;
- the same single-cell update and resync on Textual's DataTable, the baseline this widget
  replaced (DataTable recomputes offsets over all rows on every update).

Run: python -m bench.tui_bench [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult
from textual.geometry import Region
from textual.widgets import DataTable

from bench.report import Figure, Section, figures_table
from smartmon import api, credentials
from smartmon.tui.app import SmartmonApp
from smartmon.tui.columns import DEVICE_COLUMNS
from smartmon.tui.screens.dashboard import DashboardScreen
from smartmon.tui.widgets.live_table import LiveTable

SIZE = (160, 50)
NOW = datetime(2026, 12, 4, 20, 0, tzinfo=UTC)
UPDATE_TARGET_MS = 5.0
RESYNC_TARGET_MS = 500.0


def fleet(n: int, seed: int) -> list[api.Device]:
    """n devices with varied names, owners, IPs and rates."""
    rng = random.Random(seed)
    owners = [f"user{i}" for i in range(20)]
    agent = api.AgentOut("0.1.0", "Linux 6.1", "host", None)
    devices = []
    for i in range(n):
        online = rng.random() < 0.9
        conns = rng.randrange(0, 200) if online else 0
        devices.append(
            api.Device(
                id=i + 1, device_name=f"device-{rng.randrange(10**6):06d}-{i}", username=rng.choice(owners),
                status="online" if online else "offline", connection_count=conns,
                protocols=["TCP", "UDP"] if conns else [],
                unique_ips=[f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(3)],
                last_seen=NOW - timedelta(seconds=rng.randrange(1, 600)), registered_at=NOW - timedelta(days=30),
                collected_at=NOW, interval_s=10, bytes_in=rng.randrange(10**9), bytes_out=rng.randrange(10**9),
                bytes_in_rate=rng.random() * 1e6, bytes_out_rate=rng.random() * 1e5, dropped_reports=0,
                key_active=True, agent=agent,
            )
        )  # fmt: skip
    return devices


def changed(device: api.Device, rng: random.Random) -> api.Device:
    """The device after one more report."""
    import msgspec

    return msgspec.structs.replace(
        device,
        bytes_in_rate=rng.random() * 1e6,
        bytes_out_rate=rng.random() * 1e5,
        connection_count=rng.randrange(0, 200),
        last_seen=NOW,
    )


def render_visible(table: LiveTable[Any, Any] | DataTable[Any]) -> None:
    """Render every visible line, as a full repaint would."""
    table.render_lines(Region(0, 0, table.size.width, table.size.height))


def timed(action: Callable[[], None]) -> float:
    start = time.perf_counter()
    action()
    return (time.perf_counter() - start) * 1000


async def measure_live_table(n: int, updates: int, resyncs: int) -> dict[str, list[float]]:
    """Milliseconds per update and per resync on the real dashboard."""
    rng = random.Random(1)
    devices = fleet(n, seed=2)
    # the real app and dashboard; its stream points at a closed port (events are applied
    # directly, so the figures are the UI's own cost, without the socket)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = f"http://127.0.0.1:{port}"
    app = SmartmonApp(
        server, credentials.Login(server, "bench", "token"), clock=NOW.timestamp, retry_s=(60, 60)
    )
    results: dict[str, list[float]] = {
        "update": [],
        "update_sorted_by_rate": [],
        "resync": [],
        "first_load": [],
    }
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        table = screen.table
        hello = api.HelloEvent(
            user=api.UserOut(1, "bench", "admin"), stats=stats(devices), devices=devices
        )
        results["first_load"].append(
            timed(lambda: (screen.apply_events([hello]), render_visible(table)))
        )
        await pilot.pause()
        table.cursor_row = n // 2  # the operator is looking at the middle of the fleet
        await pilot.pause()
        for sort in ("name", "in"):
            table.sort_by(sort, reverse=sort == "in")
            await pilot.pause()
            key = "update" if sort == "name" else "update_sorted_by_rate"
            for _ in range(updates):
                i = rng.randrange(n)
                devices[i] = changed(devices[i], rng)
                event = api.DeviceEvent(device=devices[i])
                results[key].append(
                    timed(lambda e=event: (screen.apply_events([e]), render_visible(table)))
                )
            await pilot.pause()
        for _ in range(resyncs):
            devices = [changed(d, rng) for d in devices]
            hello = api.HelloEvent(user=hello.user, stats=stats(devices), devices=devices)
            results["resync"].append(
                timed(lambda h=hello: (screen.apply_events([h]), render_visible(table)))
            )
            await pilot.pause()
        assert len(table) == n
    return results


class DataTableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield DataTable()


async def measure_data_table(n: int, updates: int) -> dict[str, list[float]]:
    """The same work on Textual's DataTable: one cell update (+ render), and a reload."""
    rng = random.Random(1)
    devices = fleet(n, seed=2)
    app = DataTableApp()
    results: dict[str, list[float]] = {"update": [], "resync": []}
    now = NOW.timestamp()

    def row(d: api.Device) -> list[Any]:
        return [c.render(d, now) for c in DEVICE_COLUMNS]

    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one(DataTable)
        for column in DEVICE_COLUMNS:
            table.add_column(column.label, key=column.key)

        def load() -> None:
            table.clear()
            for d in devices:
                table.add_row(*row(d), key=str(d.id))
            table._update_dimensions(table._new_rows)
            table._new_rows.clear()
            render_visible(table)

        results["resync"].append(timed(load))
        await pilot.pause()
        table.move_cursor(row=n // 2)
        await pilot.pause()
        for _ in range(updates):
            d = changed(devices[rng.randrange(n)], rng)
            results["update"].append(
                timed(
                    lambda d=d: (
                        table.update_cell(str(d.id), "in", row(d)[6]),
                        render_visible(table),
                    )
                )
            )
    return results


def stats(devices: list[api.Device]) -> api.FleetStats:
    online = sum(d.status == "online" for d in devices)
    return api.FleetStats(
        len(devices), online, len(devices) - online, sum(d.connection_count for d in devices),
        sum(d.bytes_in_rate or 0 for d in devices), sum(d.bytes_out_rate or 0 for d in devices),
    )  # fmt: skip


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


SCREEN_TARGET_P95_MS = 250.0


async def measure_post_to_screen(devices: int, samples: int) -> dict[str, list[float]]:
    """ms from an agent's POST to the new value in the dashboard of a real server's stream.

    A real `smartmon serve` process, a real WebSocket stream, the real app under Pilot;
    the other devices post 100 reports/s in the background from another thread.
    """
    import threading

    import httpx

    from bench.ingest_bench import INGEST_PATH, BenchServer, DeviceTraffic, enroll
    from bench.loadgen import build_request, run_load

    results: dict[str, list[float]] = {"screen": [], "ack": []}
    with tempfile.TemporaryDirectory(prefix="smartmon-bench-") as tmp:
        server = BenchServer(Path(tmp) / "data")
        try:
            keys, token = enroll(server.url, devices)
            rng = random.Random(3)
            traffic = [DeviceTraffic(i, rng) for i in range(devices)]
            gzip_json = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
            for i, key in enumerate(keys):  # every device reports once before the app opens
                httpx.post(
                    server.url + INGEST_PATH, content=traffic[i].next_body(),
                    headers={"Authorization": f"Bearer {key}", **gzip_json},
                )  # fmt: skip
            background = [
                build_request(
                    server.url, INGEST_PATH, traffic[1 + i % (devices - 1)].next_body(),
                    {"Authorization": f"Bearer {keys[1 + i % (devices - 1)]}", **gzip_json},
                )
                for i in range(samples * 20)
            ]  # fmt: skip

            def load() -> None:  # in its own thread and loop, as another process would
                with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                    asyncio.run(
                        run_load(
                            server.url,
                            background.__getitem__,
                            connections=4,
                            total=len(background),
                            rate=100,
                        )
                    )

            app = SmartmonApp(
                server.url, credentials.Login(server.url, "bench", token), retry_s=(0.5, 2)
            )
            async with app.run_test(size=SIZE) as pilot:
                while (
                    not isinstance(app.screen, DashboardScreen) or len(app.screen.table) < devices
                ):
                    await pilot.pause(0.05)
                table = app.screen.table
                loader = threading.Thread(target=load, daemon=True)
                loader.start()
                measured_key = keys[0]
                record = next(d for d in table.records.values() if d.device_name == "bench-00000")
                with httpx.Client(base_url=server.url, timeout=30) as http:
                    for n in range(samples):
                        body = traffic[0].next_body()
                        before = record.last_seen
                        started = time.perf_counter()
                        post = asyncio.get_running_loop().run_in_executor(
                            None,
                            lambda b=body: http.post(
                                INGEST_PATH,
                                content=b,
                                headers={"Authorization": f"Bearer {measured_key}", **gzip_json},
                            ),
                        )
                        while True:
                            current = table.get(record.id)
                            if current is not None and current.last_seen != before:
                                results["screen"].append(1000 * (time.perf_counter() - started))
                                record = current
                                break
                            await asyncio.sleep(0.001)
                        response = await post
                        assert response.status_code == 200, response.text
                        results["ack"].append(1000 * response.elapsed.total_seconds())
                        await pilot.pause(0.05 if n % 2 else 0.2)
        finally:
            server.stop()
    return results


def section(quick: bool = False) -> Section:
    """Run the TUI benchmark; quick mode uses a small fleet (for the test suite)."""
    n = 500 if quick else 10_000
    updates = 30 if quick else 300
    resyncs = 2 if quick else 5
    live = asyncio.run(measure_live_table(n, updates, resyncs))
    base = asyncio.run(measure_data_table(n, 5 if quick else 20))
    update = statistics.median(live["update"])
    moving = statistics.median(live["update_sorted_by_rate"])
    resync = statistics.median(live["resync"])
    e2e = asyncio.run(measure_post_to_screen(20 if quick else 200, 10 if quick else 100))
    screen_p95 = p95(e2e["screen"])
    figures = [
        Figure(
            f"apply one device update, {n:,} devices (median)", update, "ms",
            "DataTable update_cell", statistics.median(base["update"]),
            f"<= {UPDATE_TARGET_MS:g} ms", update <= UPDATE_TARGET_MS,
        ),
        Figure(
            f"apply one device update that moves its row, {n:,} devices (median)", moving, "ms",
            target=f"<= {UPDATE_TARGET_MS:g} ms", ok=moving <= UPDATE_TARGET_MS,
        ),
        Figure(
            f"full resync, {n:,} devices (median)", resync, "ms",
            "DataTable clear + add_rows", statistics.median(base["resync"]),
            f"<= {RESYNC_TARGET_MS:g} ms", resync <= RESYNC_TARGET_MS,
        ),
        Figure(
            "agent POST -> change in the dashboard p95", screen_p95, "ms",
            "POST round trip p95", p95(e2e["ack"]),
            f"<= {SCREEN_TARGET_P95_MS:g} ms", screen_p95 <= SCREEN_TARGET_P95_MS,
        ),
    ]  # fmt: skip
    details = "\n".join(
        [
            f"Each figure includes the repaint it causes in a {SIZE[0]}x{SIZE[1]} terminal"
            " (`render_lines` over the visible area; unchanged lines come from Textual's line"
            " cache, as in a real frame). p95: update"
            f" {p95(live['update']):.3f} ms, moving update {p95(live['update_sorted_by_rate']):.3f} ms,"
            f" resync {p95(live['resync']):.1f} ms; first load of the fleet {live['first_load'][0]:.1f} ms.",
            f"POST -> dashboard: a real server process and stream, {len(e2e['screen'])} reports of one"
            f" device while the others post 100 reports/s; median {statistics.median(e2e['screen']):.1f} ms."
            " The figure is taken when the dashboard's table holds the new value; Textual paints it"
            " on its next frame (at most 1/60 s later).",
        ]
    )
    return Section("TUI", "python -m bench.tui_bench", figures, details)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="a small fleet, as the test suite runs it"
    )
    result = section(parser.parse_args().quick)
    print(figures_table(result.figures))
    print(result.details)


if __name__ == "__main__":
    main()
