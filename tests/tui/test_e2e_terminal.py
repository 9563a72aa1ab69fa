"""End to end in a real terminal: `smartmon serve`, the real agent, and `smartmon tui` in tmux."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_PASSWORD, free_port
from tests.terminal import Tmux, needs_tmux

pytestmark = [
    pytest.mark.slow,
    needs_tmux,
]


def smartmon(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smartmon", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )  # type: ignore[call-overload, no-any-return]


def test_tui_shows_the_real_agents_device_and_connections(tmux: Tmux, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    logs = tmp_path / "logs"
    logs.mkdir()
    serve_log = (logs / "serve.out").open("w")
    agent_log = (logs / "agent.out").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "smartmon", "serve", "--port", str(port), "--data-dir", str(tmp_path / "srv")],
        stdout=serve_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    agent: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/schema", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and server.poll() is None, (
                    logs / "serve.out"
                ).read_text()
                time.sleep(0.1)
        done = smartmon(
            "register",
            "--server",
            url,
            "--username",
            "admin",
            "--password-stdin",
            input=ADMIN_PASSWORD + "\n",
        )
        assert done.returncode == 0, done.stderr
        token = smartmon("token", "create", "--server", url).stdout.strip()
        assert token.startswith("smt_")
        agent = subprocess.Popen(
            [sys.executable, "-m", "smartmon", "agent", "--token", token, "--server", url,
             "--interval", "1", "--device", "e2e-box"],
            stdout=agent_log, stderr=subprocess.STDOUT,
        )  # fmt: skip

        env = " ".join(
            f"{n}={shlex.quote(os.environ[n])}"
            for n in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")
        )
        command = f"env -u COLUMNS -u LINES {env} TERM=xterm-256color {shlex.quote(sys.executable)} -m smartmon tui --server {url}"
        # a shell first, so the TUI starts in a terminal that already has its final size
        tmux.run(
            "new-session", "-d", "-x", "150", "-y", "45", "env -u COLUMNS -u LINES PS1='ready$ ' sh"
        )
        tmux.wait_for("ready$")
        tmux.run("send-keys", command, "Enter")
        screen = tmux.wait_for("e2e-box", "● online")
        assert f"admin @ {url}" in screen

        tmux.run("send-keys", "Enter")
        # the device screen: the header from the agent's reports, then its live connections
        screen = tmux.wait_for("Capabilities:", "netlink collector", "Connections", "LISTEN")
        assert "e2e-box" in screen and "Agent: " in screen
        # filtered to the server's port: its listening socket, and this TUI's own stream
        # connection to it, seen from both ends, as the agent on this machine reports them
        tmux.run("send-keys", "/")
        time.sleep(0.5)
        tmux.run("send-keys", "-l", str(port))
        time.sleep(0.5)
        tmux.run("send-keys", "Enter")
        screen = tmux.wait_for(f"127.0.0.1:{port}", "ESTABLISHED", " of ")
        rows = [line for line in screen.splitlines() if f"127.0.0.1:{port}" in line]
        assert any("LISTEN" in r for r in rows) and any("ESTABLISHED" in r for r in rows), screen
        tmux.run("send-keys", "Escape")
        tmux.wait_for("Top IPs", "e2e-box")
        tmux.run("send-keys", "q")
        screen = tmux.wait_for("ready$ ", timeout=15)  # back at the shell prompt
        assert "Traceback" not in screen
    finally:
        for process in (agent, server):
            if process is not None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        serve_log.close()
        agent_log.close()
