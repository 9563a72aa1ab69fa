"""The simulated fleet against a real server: enrollment, reports, history, outages, faults."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import time
from datetime import datetime
from typing import Any

import httpx
import msgspec
import pytest

from smartmon import wire
from smartmon.simulate.fleet import Fleet, FleetError, FleetStatus, SimDevice
from smartmon.simulate.model import FIRMWARE_HOST, DeviceModel, Profile
from tests.conftest import LiveServer

DOC_NETS = [
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
]
# every remote address a device may show: documentation ranges, or "any" for listeners
ANY = {"0.0.0.0", "::"}
BRISK = Profile(firmware_check_s=(0.4, 0.8), new_destination_s=2.0)


def documentation(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return any(address in net for net in DOC_NETS)


def comparable(report: wire.Report) -> dict[str, Any]:
    """A report without what differs from run to run by design (id, clock, delivery)."""
    data: dict[str, Any] = msgspec.to_builtins(report)
    for key in ("reportId", "collectedAt", "droppedReports"):
        data.pop(key)
    return data


async def run_fleet(fleet: Fleet, seconds: float) -> FleetStatus:
    return await asyncio.wait_for(fleet.run(seconds), timeout=seconds + 15)


async def test_devices_enroll_report_and_show_on_the_dashboard(live_server: LiveServer) -> None:
    sent: list[tuple[str, wire.Report]] = []
    fleet = Fleet(
        live_server.url, 4, token=live_server.enrollment_token(), interval_s=0.25, seed=11,
        profile=BRISK, on_report=lambda d, r: sent.append((d.name, r)),
    )  # fmt: skip
    final = await run_fleet(fleet, 3.0)

    assert [d.name for d in fleet.devices] == ["meter-0001", "meter-0002", "gw-0003", "meter-0004"]
    keys = {d.key for d in fleet.devices}
    assert len(keys) == 4 and None not in keys
    assert final.errors == 0 and final.enrolled == 4
    assert final.reports_sent == len(sent) >= 4 * 5

    listing = live_server.request("GET", "/api/dashboard/users", live_server.admin_token).json()
    devices = {d["deviceName"]: d for d in listing["data"]}
    assert set(devices) == {"meter-0001", "meter-0002", "gw-0003", "meter-0004"}
    for name, device in devices.items():
        assert device["status"] == "online", name
        assert device["connectionCount"] >= 3, name
        assert set(device["protocols"]) == {"TCP", "UDP"}, name
        assert device["uniqueIps"] and all(documentation(ip) for ip in device["uniqueIps"])
        assert device["bytesIn"] > 0 and device["bytesOut"] > 0
        assert device["agent"]["hostname"] == name
    # a gateway holds many more connections than a meter
    assert devices["gw-0003"]["connectionCount"] > 5 * devices["meter-0001"]["connectionCount"]

    detail = live_server.request(
        "GET", f"/api/dashboard/user/{devices['meter-0001']['id']}", live_server.admin_token
    ).json()["data"]
    assert {(c["protocol"], c["state"]) for c in detail["connections"]} >= {
        ("TCP", "LISTEN"), ("TCP", "ESTABLISHED"), ("UDP", "ESTABLISHED"), ("UDP", "UNCONN"),
    }  # fmt: skip
    assert any(c["destPort"] in (443, 8883) for c in detail["connections"])
    assert any(c["protocol"] == "UDP" and c["destPort"] == 123 for c in detail["connections"])
    assert detail["destinations"] and all(documentation(d["ip"]) for d in detail["destinations"])
    counters = [c["bytesOut"] for c in detail["connections"] if c["state"] == "ESTABLISHED"]
    assert any(c for c in counters if c)  # TCP counters grew; UDP ones are unknown (null)
    for name, report in sent:
        for c in [*report.connections, *report.closed]:
            assert c.dest_ip in ANY or documentation(c.dest_ip), (name, c)


async def test_short_lived_connections_land_in_history(live_server: LiveServer) -> None:
    fleet = Fleet(
        live_server.url, 1, token=live_server.enrollment_token(), interval_s=0.2, seed=3,
        profile=BRISK,
    )  # fmt: skip
    await run_fleet(fleet, 2.5)
    device_id = fleet.devices[0].device_id
    history = live_server.request(
        "GET", f"/api/dashboard/user/{device_id}?closed=true", live_server.admin_token
    ).json()["data"]["connections"]
    checks = [c for c in history if c["destIp"] == FIRMWARE_HOST and c["destPort"] == 443]
    assert checks, history
    assert all(c["closedAt"] and c["state"] == "CLOSE" and c["bytesIn"] > 0 for c in checks)
    lookups = [c for c in history if c["protocol"] == "UDP" and c["destPort"] == 53]
    assert lookups


async def test_devices_go_offline_and_come_back(live_server: LiveServer) -> None:
    flaky = Profile(mean_uptime_s=0.8, outage_s=(0.6, 1.0))
    times: dict[str, list[float]] = {}
    online_counts: list[int] = []

    def seen(device: SimDevice, report: wire.Report) -> None:
        times.setdefault(device.name, []).append(time.monotonic())

    fleet = Fleet(
        live_server.url, 3, token=live_server.enrollment_token(), interval_s=0.15, seed=5,
        profile=flaky, on_report=seen, on_status=lambda s: online_counts.append(s.online),
    )  # fmt: skip
    final = await run_fleet(fleet, 4.0)
    assert final.errors == 0
    assert sum(d.model.outages for d in fleet.devices) >= 2
    assert min(online_counts) < 3  # the status line saw devices offline
    # a device that was away for a while and then reported again
    came_back = [
        name for name, ts in times.items()
        if any(b - a > 0.45 for a, b in itertools.pairwise(ts))
    ]  # fmt: skip
    assert came_back
    # and the server saw the same gap in its traffic samples
    device = next(d for d in fleet.devices if d.name == came_back[0])
    samples = live_server.request(
        "GET", f"/api/dashboard/user/{device.device_id}", live_server.admin_token
    ).json()["data"]["traffic"]
    stamps = sorted(datetime.fromisoformat(s["t"]).timestamp() for s in samples)
    assert len(stamps) == len(times[device.name])
    assert any(b - a > 0.45 for a, b in itertools.pairwise(stamps))


async def test_a_seed_gives_the_same_fleet(live_server: LiveServer) -> None:
    runs: list[dict[str, list[dict[str, Any]]]] = []
    for _ in range(2):
        reports: dict[str, list[dict[str, Any]]] = {}
        fleet = Fleet(
            live_server.url, 4, token=live_server.enrollment_token(), interval_s=0.2, seed=42,
            profile=BRISK,
            on_report=lambda d, r, out=reports: out.setdefault(d.name, []).append(comparable(r)),
        )  # fmt: skip
        await run_fleet(fleet, 1.5)
        runs.append(reports)
    first, second = runs
    assert set(first) == set(second) == {"meter-0001", "meter-0002", "gw-0003", "meter-0004"}
    for name in first:
        n = min(len(first[name]), len(second[name]))
        assert n >= 3
        assert first[name][:n] == second[name][:n], name


def test_a_seed_fixes_connections_and_counters_for_many_reports() -> None:
    def series(seed: int) -> list[dict[str, Any] | None]:
        model = DeviceModel(3, seed=seed, interval_s=10.0, profile=BRISK)
        out: list[dict[str, Any] | None] = []
        for _ in range(300):
            report = model.tick()
            out.append(None if report is None else comparable(report))
        return out

    a, b = series(7), series(7)
    assert a == b
    assert series(8) != a
    reports = [r for r in a if r is not None]
    totals = [r["interfaces"]["bytesIn"] for r in reports]
    assert totals == sorted(totals) and totals[-1] > totals[0]  # cumulative counters grow
    assert any(r["closed"] for r in reports)  # firmware checks and churn end connections
    new = {c["destIp"] for r in reports for c in r["connections"]} - {
        c["destIp"] for c in reports[0]["connections"]
    }
    assert new  # now and then a new destination


async def test_retry_after_is_honoured() -> None:
    attempts: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/monitor/register":
            return httpx.Response(200, json={"deviceId": 1, "deviceKey": "smd_k", "success": True})
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            return httpx.Response(
                429, json={"error": "rate_limited", "detail": "slow down"},
                headers={"retry-after": "0.6"},
            )  # fmt: skip
        return httpx.Response(200, json={"reportId": "x" * 32, "duplicate": False})

    fleet = Fleet(
        "http://sim.test", 1, token="smt_t", interval_s=2.0, seed=1,
        transport=httpx.MockTransport(answer),
    )  # fmt: skip
    fleet.devices[0].start_offset_s = 0.0
    final = await run_fleet(fleet, 1.5)
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.6
    assert final.rate_limited == 1 and final.reports_sent == 1


async def test_a_refused_token_stops_the_fleet_with_the_auth_code(live_server: LiveServer) -> None:
    fleet = Fleet(live_server.url, 3, token="smt_not-a-real-token", interval_s=0.2, seed=1)
    with pytest.raises(FleetError) as caught:
        await run_fleet(fleet, 5.0)
    assert caught.value.code == 4 and "refused" in caught.value.message


async def test_the_fleet_survives_the_server_going_away(live_server: LiveServer) -> None:
    fleet = Fleet(
        live_server.url, 3, token=live_server.enrollment_token(), interval_s=0.2, seed=9,
        backoff_cap_s=0.4,
    )  # fmt: skip
    task = asyncio.create_task(fleet.run())

    async def sent_more_than(n: int) -> int:
        deadline = time.monotonic() + 10
        while fleet.status().reports_sent <= n:
            assert time.monotonic() < deadline, fleet.status()
            await asyncio.sleep(0.05)
        return fleet.status().reports_sent

    await sent_more_than(3)
    await asyncio.to_thread(live_server.stop)
    await asyncio.sleep(1.0)
    down = fleet.status()
    assert down.errors > 0 and down.last_error and "unreachable" in down.last_error
    await asyncio.to_thread(live_server.start)
    await sent_more_than(down.reports_sent + 3)
    fleet.stop()
    final = await asyncio.wait_for(task, 10)
    assert final.reports_sent > down.reports_sent
    # reports lost while the server was away are counted in droppedReports
    listing = live_server.request("GET", "/api/dashboard/users", live_server.admin_token).json()
    assert sum(d["droppedReports"] for d in listing["data"]) > 0
