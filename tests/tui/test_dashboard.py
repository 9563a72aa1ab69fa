"""The dashboard against a real server: live rows, sorting, filtering, export, empty state."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, cast

import pytest

from smartmon import api
from smartmon.tui.screens.dashboard import DashboardScreen
from smartmon.tui.widgets.live_table import LiveTable
from tests.conftest import LiveServer
from tests.tui.conftest import SIZE, Reporter, conn, logged_in_app, screen_text, until

DeviceTable = LiveTable[int, api.Device]


def devices(app: Any) -> DeviceTable:
    return cast(DeviceTable, app.screen.query_one("#devices", LiveTable))


def names(table: DeviceTable) -> list[str]:
    return [table.cell_text(i, "name") for i in range(len(table))]


async def test_devices_show_live_and_the_cursor_stays_on_its_device(
    live_server: LiveServer,
) -> None:
    fleet = {name: Reporter(live_server, name) for name in ("gamma", "alpha", "beta")}
    for reporter in fleet.values():
        reporter.send([conn("192.0.2.1", 443)])
    app = logged_in_app(live_server)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: isinstance(app.screen, DashboardScreen) and len(devices(app)) == 3,
            "3 devices",
        )
        table = devices(app)
        assert table.has_focus and table.cursor_row == 0
        assert names(table) == ["alpha", "beta", "gamma"]
        text = screen_text(app)
        assert "● online" in text and "192.0.2.1" in text and "3" in text
        await pilot.press("down")
        assert table.cursor_key == fleet["beta"].device_id

        fleet["beta"].send([conn("192.0.2.1", 443), conn("198.51.100.7", 22, source_port=40001)])
        await until(
            pilot, lambda: table.cell_text(1, "connections") == "2", "beta's new connection count"
        )
        assert table.cursor_key == fleet["beta"].device_id and table.cursor_row == 1
        assert "198.51.100.7" in table.cell_text(1, "ips")

        late = Reporter(live_server, "aardvark")
        late.send([conn("203.0.113.9", 80)])
        await until(pilot, lambda: len(table) == 4, "a newly enrolled device")
        assert names(table)[0] == "aardvark"
        assert table.cursor_key == fleet["beta"].device_id, "the selection follows its device"
        await until(
            pilot, lambda: "4" in screen_text(app).split("devices")[0], "the stat card to count 4"
        )


async def test_sorting_by_key_and_by_header_click(live_server: LiveServer) -> None:
    for name, n in (("small", 1), ("large", 3), ("medium", 2)):
        Reporter(live_server, name).send(
            [conn("192.0.2.1", 443, source_port=40000 + i) for i in range(n)]
        )
    app = logged_in_app(live_server)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: isinstance(app.screen, DashboardScreen) and len(devices(app)) == 3,
            "devices",
        )
        table = devices(app)
        await pilot.press("4")  # column 4: connections, ascending
        assert names(table) == ["small", "medium", "large"]
        await pilot.press("4")  # again: descending
        assert names(table) == ["large", "medium", "small"]
        assert "Conns ▼" in screen_text(app)
        await pilot.press("s")  # next column: protocols
        assert table.sort_column == "protocols" and not table.sort_reverse
        await pilot.click(LiveTable, offset=(2, 0))  # the Device header
        assert table.sort_column == "name" and names(table) == ["large", "medium", "small"]
        await pilot.click(LiveTable, offset=(2, 0))
        assert names(table) == ["small", "medium", "large"]


async def test_incremental_filter_over_name_owner_ip_and_status(live_server: LiveServer) -> None:
    bob = live_server.user_token("bob")
    Reporter(live_server, "meter-1").send([conn("192.0.2.1", 443)])
    Reporter(live_server, "meter-2").send([conn("198.51.100.5", 443)])
    Reporter(live_server, "gateway", access_token=bob).send([conn("192.0.2.1", 53, protocol="UDP")])
    Reporter(live_server, "silent")  # enrolled, never reported: offline
    app = logged_in_app(live_server)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: isinstance(app.screen, DashboardScreen) and len(devices(app)) == 4,
            "devices",
        )
        table = devices(app)
        await pilot.press("slash", "m", "e", "t")
        assert names(table) == ["meter-1", "meter-2"]
        assert "Showing 2 of 4 devices" in screen_text(app)
        await pilot.press("e", "r", "-", "2")
        assert names(table) == ["meter-2"]
        for _ in range(7):
            await pilot.press("backspace")
        await pilot.press(*"bob")
        assert names(table) == ["gateway"]
        for _ in range(3):
            await pilot.press("backspace")
        await pilot.press(*"192.0.2.1")
        assert names(table) == ["gateway", "meter-1"]
        for _ in range(9):
            await pilot.press("backspace")
        await pilot.press(*"offline")
        assert names(table) == ["silent"]
        await pilot.press("enter")
        assert table.has_focus and names(table) == ["silent"], "enter keeps the filter"
        await pilot.press("escape")
        assert len(table) == 4 and "Showing" not in screen_text(app)
        await pilot.press("slash", *"nothing-like-this")
        assert len(table) == 0 and "No device matches" in screen_text(app)


async def test_export_writes_the_devices_shown(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Reporter(live_server, "alpha").send([conn("192.0.2.1", 443)])
    Reporter(live_server, "beta").send(
        [conn("192.0.2.2", 443), conn("192.0.2.3", 443, source_port=2)]
    )
    app = logged_in_app(live_server)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: isinstance(app.screen, DashboardScreen) and len(devices(app)) == 2,
            "devices",
        )
        await pilot.press("4", "4")  # most connections first
        await pilot.press("e")
        await until(pilot, lambda: app.screen.query("#export-path"), "the export dialog")
        path_input = app.screen.query_one("#export-path")
        path_input.value = "fleet.csv"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: (tmp_path / "fleet.csv").exists(), "the CSV file")
        rows = list(csv.DictReader((tmp_path / "fleet.csv").read_text().splitlines()))
        assert [(r["name"], r["connections"], r["status"]) for r in rows] == [
            ("beta", "2", "online"),
            ("alpha", "1", "online"),
        ]
        assert rows[0]["uniqueIps"].split() == ["192.0.2.2", "192.0.2.3"]
        assert any("fleet.csv" in str(n.message) for n in app._notifications)

        await pilot.press("slash", *"alp", "enter", "e")
        await until(pilot, lambda: app.screen.query("#export-path"), "the export dialog")
        await pilot.click("#format-json")
        value = app.screen.query_one("#export-path").value  # type: ignore[attr-defined]
        assert value.endswith(".json"), "choosing JSON changes the extension"
        app.screen.query_one("#export-path").value = str(tmp_path / "alpha.json")  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: (tmp_path / "alpha.json").exists(), "the JSON file")
        data = json.loads((tmp_path / "alpha.json").read_text())
        assert [d["name"] for d in data] == ["alpha"] and data[0]["lastSeen"].startswith("20")

        await pilot.press("e")
        await until(pilot, lambda: app.screen.query("#export-path"), "the export dialog")
        app.screen.query_one("#export-path").value = str(tmp_path / "missing-dir" / "x.csv")  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(
            pilot,
            lambda: any("does not exist" in str(n.message) for n in app._notifications),
            "an error",
        )


async def test_empty_state_shows_the_agent_command_with_a_fresh_token(
    live_server: LiveServer,
) -> None:
    app = logged_in_app(live_server)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot, lambda: "smartmon agent --token smt_" in screen_text(app), "the agent command"
        )
        text = screen_text(app)
        token = text.split("--token ")[1].split()[0]
        assert f"--server {live_server.url}" in text and "No devices yet" in text
        tokens = live_server.request("GET", "/api/tokens", live_server.admin_token).json()
        assert any(t["status"] == "active" for t in tokens)
        # the token works: a device enrolled with it appears on the dashboard with its first report
        r = live_server.request(
            "POST", "/api/monitor/register", token, json={"deviceName": "first"}
        )
        assert r.status_code == 200
        report = {
            "reportId": "0" * 32,
            "seq": 1,
            "collectedAt": "2026-12-04T20:00:00Z",
            "intervalS": 5,
        }
        r = live_server.request(
            "POST", "/api/monitor/connections", r.json()["deviceKey"], json=report
        )
        assert r.status_code == 200, r.text
        await until(
            pilot,
            lambda: "first" in screen_text(app) and "No devices yet" not in screen_text(app),
            "the first device",
        )
