"""`smartmon demo` with its dashboard, in a real terminal (tmux): quitting stops everything."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path

import psutil

from tests.terminal import Tmux, needs_tmux

pytestmark = needs_tmux


def test_quitting_the_dashboard_stops_everything(tmux: Tmux, tmp_path: Path) -> None:
    exit_file = tmp_path / "exit-code"
    env = " ".join(
        f"{name}={shlex.quote(os.environ[name])}"
        for name in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")
    )
    command = (
        f"env {env} {shlex.quote(sys.executable)} -m smartmon demo --port 0 --devices 2; "
        f"echo $? > {shlex.quote(str(exit_file))}; sleep 60"
    )
    shell = int(tmux.run("new-session", "-d", "-x", "140", "-y", "40", "-P", "-F",
                         "#{pane_pid}", command).strip())  # fmt: skip
    screen = tmux.wait_for("meter-0002")
    assert "meter-0001" in screen and "demo @ http://127.0.0.1:" in screen
    demo = next(p for p in psutil.Process(shell).children() if "demo" in p.cmdline())
    children = demo.children(recursive=True)
    assert len(children) == 2  # the server and this machine's agent

    tmux.run("send-keys", "q")
    deadline = time.monotonic() + 40
    while not exit_file.exists() or not exit_file.read_text().strip():
        assert time.monotonic() < deadline, tmux.screen()
        time.sleep(0.2)
    assert exit_file.read_text().strip() == "0"
    _, alive = psutil.wait_procs([demo, *children], timeout=5)
    assert not alive
    screen = tmux.screen()
    assert "smartmon demo stopped; the data stays in" in screen
    assert "Traceback" not in screen
