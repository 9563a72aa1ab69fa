"""`smartmon demo --no-tui` as a real process in a temporary home: up, logged in, stopped, reused."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from smartmon import credentials
from smartmon.cli import app
from tests.conftest import LiveServer, free_port

SMARTMON = [sys.executable, "-m", "smartmon"]
SIMULATED = {"meter-0001", "meter-0002", "gw-0003"}


class DemoProcess:
    """`smartmon demo --no-tui` in the background, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*SMARTMON, "demo", "--no-tui", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        assert hasattr(stream, "readline")
        for line in iter(stream.readline, ""):
            lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.out):
            assert self.process.poll() is None, f"exited {self.process.returncode}: {self.err}"
            assert time.monotonic() < deadline, (self.out, self.err)
            time.sleep(0.05)

    def field(self, name: str) -> str:
        for line in self.out:
            match = re.match(rf"\s+{name}\s+(.*)$", line)
            if match:
                return match.group(1)
        raise AssertionError(f"no {name} in {self.out}")

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=40)
        self.close()
        return code

    def kill(self) -> None:
        for child in self.children():
            child.kill()
        self.process.kill()
        self.process.wait()
        self.close()

    def close(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def devices_seen(url: str, want: set[str], timeout: float = 30) -> list[dict[str, object]]:
    """The devices listed with the saved login, once `want` are all there."""
    login = credentials.load(url)
    assert login is not None and login.username == "demo"
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(
            url + "/api/dashboard/users", headers={"authorization": f"Bearer {login.token}"}
        )
        assert r.status_code == 200, r.text
        data: list[dict[str, object]] = r.json()["data"]
        reported = {str(d["deviceName"]) for d in data if d["lastSeen"]}
        if want <= {str(d["deviceName"]) for d in data} and reported >= SIMULATED:
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.2)


def stopped_cleanly(demo: DemoProcess) -> None:
    children = demo.children()
    commands = [" ".join(c.cmdline()) for c in children]
    assert any(" serve " in c for c in commands) and any(" agent " in c for c in commands)
    assert demo.interrupt() == 0, demo.err
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, alive
    assert demo.out[-1] == "smartmon demo stopped."
    assert not any("Traceback" in line for line in demo.err), demo.err


def test_demo_runs_headless_stops_cleanly_and_reuses_its_data(isolated_home: Path) -> None:
    port = free_port()
    data_dir = isolated_home / "data" / "smartmon" / "demo"
    here = socket.gethostname()

    first = DemoProcess("--port", str(port), "--devices", "3")
    try:
        first.wait_for("Ctrl+C stops everything.")
        url = f"http://127.0.0.1:{port}"
        assert first.field("server").startswith(f"{url}   (data: {data_dir})")
        login = first.field("login")
        match = re.match(r"demo / (\S+)\s+\(new account", login)
        assert match, login
        account = data_dir / "demo-account.json"
        assert json.loads(account.read_text()) == {"username": "demo", "password": match[1]}
        assert stat.S_IMODE(account.stat().st_mode) == 0o600
        devices_seen(url, SIMULATED | {here})
        listed = subprocess.run(
            [*SMARTMON, "devices", "--server", url, "--json"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        assert {d["deviceName"] for d in json.loads(listed.stdout)} == SIMULATED | {here}
        stopped_cleanly(first)
    finally:
        if first.process.poll() is None:
            first.kill()

    # the next run reuses the data and the account, even when the port is taken meanwhile
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        second = DemoProcess("--port", str(port), "--devices", "3")
        try:
            second.wait_for("Ctrl+C stops everything.")
            taken = [line for line in second.err if f"port {port} is taken; using" in line]
            assert taken, second.err
            url = second.field("server").split()[0]
            assert url != f"http://127.0.0.1:{port}"
            assert second.field("login") == f"demo   (password in {account})"
            assert match[1] not in "\n".join(second.out + second.err)  # shown once, at creation
            devices = devices_seen(url, SIMULATED | {here})
            assert len(devices) == 4  # the same devices, not new ones
            admin = credentials.load(url)
            assert admin is not None
            users = httpx.get(
                url + "/api/users", headers={"authorization": f"Bearer {admin.token}"}
            ).json()
            assert [u["username"] for u in users] == ["demo"]
            stopped_cleanly(second)
        finally:
            if second.process.poll() is None:
                second.kill()


@pytest.mark.parametrize(
    "flags", [["--port", "70000"], ["--devices", "-1"], ["--devices", "lots"], ["--bogus"]]
)
def test_bad_flags_exit_2(flags: list[str]) -> None:
    result = CliRunner().invoke(app, ["demo", "--no-tui", *flags])
    assert result.exit_code == 2, result.output


def test_a_data_dir_with_other_accounts_is_refused(live_server: LiveServer) -> None:
    live_server.enroll("kept-device")  # registers the admin account, and a device
    live_server.stop()
    done = subprocess.run(
        [*SMARTMON, "demo", "--no-tui", "--port", "0", "--devices", "1",
         "--data-dir", str(live_server.data_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert "already holds other accounts" in done.stderr and "--data-dir" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (live_server.data_dir / "demo-account.json").exists()
    live_server.start()  # nothing stored was lost
    listing = live_server.request("GET", "/api/dashboard/users", live_server.admin_token).json()
    assert [d["deviceName"] for d in listing["data"]] == ["kept-device"]
