"""`smartmon simulate` as a user runs it: flags, exit codes, status lines, Ctrl+C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from smartmon import credentials
from smartmon.cli import app
from tests.conftest import LiveServer, free_port

SMARTMON = [sys.executable, "-m", "smartmon"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--devices", "0"],
        ["--devices", "many"],
        ["--interval", "0"],
        ["--duration", "-1"],
        ["--seed", "x"],
        ["--server", "ftp://example.test"],
        ["--server", "http://host:port"],
        ["--no-such-flag"],
    ],
)
def test_bad_flags_exit_2(flags: list[str]) -> None:
    result = CliRunner().invoke(app, ["simulate", "--token", "smt_x", *flags])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_without_a_token_or_login_it_says_how_to_log_in() -> None:
    result = CliRunner().invoke(app, ["simulate", "--server", "http://127.0.0.1:9"])
    assert result.exit_code == 4
    assert "smartmon login --server http://127.0.0.1:9" in result.output


def test_an_unreachable_server_is_retried_until_the_duration() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = subprocess.run(
        [*SMARTMON, "simulate", "--server", url, "--token", "smt_x", "--devices", "3",
         "--interval", "0.3", "--duration", "2"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert time.monotonic() - started >= 2
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    status = [line for line in lines if "devices online" in line and "unreachable" in line]
    assert len(status) >= 3  # one line per interval while it kept trying
    assert lines[-1] == f"smartmon simulate: never reached the server at {url}"


def test_a_refused_token_exits_4(live_server: LiveServer) -> None:
    done = subprocess.run(
        [*SMARTMON, "simulate", "--server", live_server.url, "--token", "smt_bogus",
         "--devices", "2", "--interval", "0.2"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("smartmon simulate: enrolling")


def test_saved_login_status_lines_and_ctrl_c(live_server: LiveServer, tmp_path: Path) -> None:
    credentials.save(credentials.Login(live_server.url, "admin", live_server.admin_token))
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        process = subprocess.Popen(
            [*SMARTMON, "simulate", "--devices", "3", "--interval", "0.3", "--seed", "4"],
            stdout=subprocess.DEVNULL, stderr=err, env=os.environ.copy(),
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while "3/3 devices online" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log.read_text()
    assert "Traceback" not in text
    assert f"reporting to {live_server.url} every 0.3 s (seed 4)" in text
    assert text.splitlines()[-1].startswith("simulate: stopped: ")
    listing = live_server.request("GET", "/api/dashboard/users", live_server.admin_token).json()
    assert sorted(d["deviceName"] for d in listing["data"]) == [
        "gw-0003",
        "meter-0001",
        "meter-0002",
    ]
    tokens = live_server.request("GET", "/api/tokens", live_server.admin_token).json()
    assert [t["name"] for t in tokens] == ["smartmon simulate"]
