"""The real `smartmon` program against a real server, the way a user types it in a shell."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import saved
from tests.conftest import LiveServer

SMARTMON = str(Path(sys.executable).with_name("smartmon"))


def shell(script: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a bash script with `smartmon` on PATH."""
    env = {**os.environ, "PATH": f"{Path(SMARTMON).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_a_session_in_the_shell(live_server: LiveServer, isolated_home: Path) -> None:
    url = shlex.quote(live_server.url)
    r = shell(
        f"smartmon register --server {url} --username ops --password-stdin\n"
        "smartmon whoami\n"
        'T=$(smartmon token create --name "rack 4")\n'
        'echo "token=$T"\n'
        "smartmon token list --json\n",
        stdin="ops-password-1\n",
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"ops (admin) on {live_server.url}"
    token = lines[1].removeprefix("token=")
    assert token.startswith("smt_") and " " not in token
    assert json.loads("\n".join(lines[2:]))[0]["name"] == "rack 4"
    assert "Traceback" not in r.stderr
    # the token from $(...) enrolls a device
    enrolled = live_server.request(
        "POST", "/api/monitor/register", token, json={"deviceName": "rack-4-pi"}
    )
    assert enrolled.status_code == 200
    r = shell("smartmon devices --json && smartmon devices | grep rack-4-pi")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout[: r.stdout.rindex("]") + 1])[0]["deviceName"] == "rack-4-pi"
    access = saved(isolated_home)[live_server.url]["token"]
    r = shell("smartmon logout")
    assert r.returncode == 0, r.stderr
    assert live_server.request("GET", "/api/auth/me", access).status_code == 401
    r = shell("smartmon whoami")
    assert r.returncode == 4 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_errors_in_the_shell(live_server: LiveServer) -> None:
    live_server.admin_token  # noqa: B018
    url = shlex.quote(live_server.url)
    r = shell(
        f"smartmon login --server {url} --username admin --password-stdin", stdin="wrong-password\n"
    )
    assert r.returncode == 4 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = shell("smartmon whoami --server http://127.0.0.1:9 --token x")
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = shell("smartmon --version")
    assert r.returncode == 0 and r.stdout.startswith("smartmon ")
    r = shell("smartmon no-such-command")
    assert r.returncode == 2 and "Traceback" not in r.stderr
