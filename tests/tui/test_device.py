"""The device screen against a real server and its stream: header, live rows, filters, tabs."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, cast

import pytest

from smartmon.tui.columns import ConnKey, ConnRow
from smartmon.tui.screens.dashboard import DashboardScreen
from smartmon.tui.screens.device import DeviceScreen
from smartmon.tui.widgets.live_table import LiveTable
from tests.conftest import LiveServer
from tests.tui.conftest import SIZE, Reporter, conn, logged_in_app, screen_text, until

ConnTable = LiveTable[ConnKey, ConnRow]

WEB = conn("192.0.2.10", 443, source_port=40001, bytes_in=10_000, bytes_out=2_000)
SSH = conn("198.51.100.22", 22, source_port=40002, process="ssh", pid=777)
DNS = conn(
    "192.0.2.53",
    53,
    source_port=50000,
    protocol="UDP",
    state="UNCONN",
    process="resolved",
    bytes_in=None,
    bytes_out=None,
)


def table(app: Any, which: str = "connections") -> ConnTable:
    return cast(ConnTable, app.screen.query_one(f"#{which}", LiveTable))


def remotes(t: ConnTable) -> list[str]:
    return [t.cell_text(i, "remote") for i in range(len(t))]


@pytest.fixture(autouse=True)
def quick_marks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LiveTable, "MARK_SECONDS", 1.0)


async def open_device(pilot: Any, app: Any, name: str) -> DeviceScreen:
    await until(
        pilot,
        lambda: isinstance(app.screen, DashboardScreen) and len(app.screen.table) > 0,
        "devices",
    )
    dashboard = app.screen
    assert dashboard.table.move_cursor(
        next(k for k, d in dashboard.table.records.items() if d.device_name == name)
    )
    await pilot.press("enter")
    await until(
        pilot,
        lambda: isinstance(app.screen, DeviceScreen) and app.screen.loaded,
        "the device screen",
    )
    await pilot.pause(0.3)  # let the subscription reach the server
    return cast(DeviceScreen, app.screen)


async def test_header_and_live_connections(live_server: LiveServer) -> None:
    meter = Reporter(live_server, "meter")
    Reporter(live_server, "other").send([conn("203.0.113.1", 80)])
    meter.send([WEB, SSH])
    app = logged_in_app(live_server)
    async with app.run_test(size=SIZE) as pilot:
        await open_device(pilot, app, "meter")
        text = screen_text(app)
        for expected in ("meter", "● online", "Linux 6.1 test", "host-under-test", "Agent: 9.9.9",
                         "netlink collector", "processes: own", "Missing: processes of other users"):  # fmt: skip
            assert expected in text, expected
        conns = table(app)
        assert sorted(remotes(conns)) == ["192.0.2.10:443", "198.51.100.22:22"]
        assert conns.has_focus

        # next report: WEB moved 5 kB more, SSH closed, DNS opened
        web2 = {**WEB, "bytesIn": 15_000}
        meter.send([web2, DNS], closed=[SSH])
        dns_key = ("UDP", "10.0.0.2", 50000, "192.0.2.53", 53)
        ssh_key = ("TCP", "10.0.0.2", 40002, "198.51.100.22", 22)
        await until(pilot, lambda: conns.get(dns_key) is not None, "the new UDP socket")
        assert conns.marked(dns_key) == "new"
        assert conns.marked(ssh_key) == "closed", "a closed connection stays a moment, marked"
        web_row = next(
            i for i in range(len(conns)) if conns.cell_text(i, "remote") == "192.0.2.10:443"
        )
        assert conns.cell_text(web_row, "bytes_in") == "15.0 KB"
        assert (
            conns.cell_text(web_row, "rate").endswith("/s")
            and conns.cell_text(web_row, "rate") != "-"
        )
        assert conns.cell_text(web_row, "process") == "curl/4242"
        await until(pilot, lambda: conns.get(ssh_key) is None, "the closed connection to fade out")
        assert conns.marked(dns_key) is None, "the highlight is brief"
        assert "Connections: 2" in screen_text(app)

        await pilot.press("h")  # History has the closed one
        await until(pilot, lambda: len(table(app, "history")) == 1, "history")
        assert remotes(table(app, "history")) == ["198.51.100.22:22"]
        await pilot.press("d")
        dests = table(app, "destinations")
        await until(pilot, lambda: len(dests) == 3, "destinations")
        assert "192.0.2.10:443" in screen_text(app)

        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        assert app.screen.table.get(app.screen.table.cursor_key).device_name == "meter"  # type: ignore[arg-type, union-attr]


async def test_filters_and_export(
    live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    meter = Reporter(live_server, "meter")
    meter.send(
        [
            WEB,
            SSH,
            DNS,
            conn("192.0.2.10", 8443, source_port=40003, state="SYN_SENT", process="curl"),
        ]
    )
    app = logged_in_app(live_server)
    async with app.run_test(size=SIZE) as pilot:
        await open_device(pilot, app, "meter")
        conns = table(app)
        assert len(conns) == 4
        await pilot.press("p")  # protocol: TCP
        assert len(conns) == 3 and "3 of 4 connections" in screen_text(app)
        await pilot.press("p")  # UDP
        assert remotes(conns) == ["192.0.2.53:53"]
        await pilot.press("p")  # all
        assert len(conns) == 4
        await pilot.press("t")  # first state present, alphabetically: ESTABLISHED
        assert sorted(remotes(conns)) == ["192.0.2.10:443", "198.51.100.22:22"]
        await pilot.press("t")  # SYN_SENT
        assert remotes(conns) == ["192.0.2.10:8443"]
        await pilot.press("x")
        await pilot.press("slash", *"ssh")
        assert remotes(conns) == ["198.51.100.22:22"]
        await pilot.press("enter")
        assert conns.has_focus
        app.screen.query_one("#conn-text").value = "192.0.2.10"  # type: ignore[attr-defined]
        await pilot.pause()
        assert sorted(remotes(conns)) == ["192.0.2.10:443", "192.0.2.10:8443"]

        await pilot.press("e")
        await until(pilot, lambda: app.screen.query("#export-path"), "the export dialog")
        app.screen.query_one("#export-path").value = "conns.csv"  # type: ignore[attr-defined]
        await pilot.press("enter")
        await until(pilot, lambda: (tmp_path / "conns.csv").exists(), "the export")
        rows = list(csv.DictReader((tmp_path / "conns.csv").read_text().splitlines()))
        assert sorted((r["remoteIp"], r["remotePort"], r["state"]) for r in rows) == [
            ("192.0.2.10", "443", "ESTABLISHED"), ("192.0.2.10", "8443", "SYN_SENT"),
        ]  # fmt: skip
        assert {r["process"] for r in rows} == {"curl"}
