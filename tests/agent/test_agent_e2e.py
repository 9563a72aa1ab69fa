"""The real agent process against a real server on loopback: outages, kill -9, revocation."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_process import agent_command, run_agent
from agent_sockets import linux_only, wait_for

from smartmon import wire
from smartmon.agent.enroll import DeviceKeys, server_slug
from smartmon.agent.spool import Spool
from smartmon.exit_codes import ExitCode

pytestmark = [linux_only, pytest.mark.slow]

LiveServer = Any  # tests/conftest.py's LiveServer


def _seqs(server: LiveServer, device_name: str) -> list[int]:
    """seq of every report the server stored for a device, in the order it received them."""
    database = sqlite3.connect(f"file:{server.data_dir / 'smartmon.db'}?mode=ro", uri=True)
    try:
        rows = database.execute(
            "SELECT r.seq FROM reports r JOIN devices d ON d.id = r.device_id"
            " WHERE d.name = ? ORDER BY r.received_at, r.seq",
            (device_name,),
        ).fetchall()
    finally:
        database.close()
    return [row[0] for row in rows]


def _enrolled_device_id(env: dict[str, str], server: LiveServer) -> int:
    stored = DeviceKeys(Path(env["XDG_STATE_HOME"]) / "smartmon" / "agent").load(server.url)
    assert stored is not None
    return stored.device_id


def _spool_dir(env: dict[str, str], server: LiveServer) -> Path:
    return Path(env["XDG_STATE_HOME"]) / "smartmon" / "agent" / "spool" / server_slug(server.url)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    assert lines and lines[-1].startswith("smartmon: ")
    return lines[-1]


@contextlib.contextmanager
def _running_agent(*args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        agent_command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def test_once_enrolls_delivers_and_keeps_the_key(
    live_server: LiveServer, agent_env: dict[str, str]
) -> None:
    token = live_server.enrollment_token()

    done = run_agent(
        "--once", "--token", token, "--server", live_server.url, "--device", "e2e-once",
        env=agent_env,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert _seqs(live_server, "e2e-once") == [0]
    key_files = list((Path(agent_env["XDG_STATE_HOME"]) / "smartmon" / "agent").glob("*.json"))
    assert len(key_files) == 1 and key_files[0].stat().st_mode & 0o777 == 0o600

    # Environment instead of flags, the prototype's names; no token needed any more.
    env = dict(agent_env, MONITOR_SERVER_URL=live_server.url, MONITOR_DEVICE_NAME="e2e-once")
    again = run_agent("--once", env=env)
    assert again.returncode == 0, again.stderr
    assert _seqs(live_server, "e2e-once") == [0, 1]


def test_dry_run_prints_a_report_and_sends_nothing(
    live_server: LiveServer, agent_env: dict[str, str]
) -> None:
    done = run_agent("--dry-run", "--server", live_server.url, "--device", "dry", env=agent_env)

    assert done.returncode == 0, done.stderr
    report = wire.decode_report(done.stdout.encode())
    assert report.agent.capabilities.collector == "netlink"
    assert report.interfaces is not None and report.connections
    assert any(c.source_port == int(live_server.url.rsplit(":", 1)[1]) for c in report.connections)
    assert _seqs(live_server, "dry") == []
    assert not (Path(agent_env["XDG_STATE_HOME"]) / "smartmon").exists()


def test_bad_server_urls(agent_env: dict[str, str]) -> None:
    for bad in ("http://127.0.0.1:port", "ftp://127.0.0.1:8000"):
        malformed = run_agent("--once", "--token", "smt_x", "--server", bad, env=agent_env)
        assert malformed.returncode == ExitCode.USAGE
        assert "not a valid server URL" in _one_error_line(malformed.stderr)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nobody_there = f"http://127.0.0.1:{closed_port}"
    unreachable = run_agent(
        "--once", "--token", "smt_x", "--server", nobody_there, "-q", env=agent_env
    )
    assert unreachable.returncode == ExitCode.UNREACHABLE
    assert "could not deliver" in _one_error_line(unreachable.stderr)
    assert len(unreachable.stderr.splitlines()) == 1
    spool = Path(agent_env["XDG_STATE_HOME"]) / "smartmon/agent/spool" / server_slug(nobody_there)
    assert len(list(spool.glob("*.json.gz"))) == 1  # kept for when the server is there


def test_a_revoked_key_stops_the_agent_unless_it_has_a_token(
    live_server: LiveServer, agent_env: dict[str, str]
) -> None:
    token = live_server.enrollment_token()
    args = ("--once", "--server", live_server.url, "--device", "revoked")
    assert run_agent(*args, "--token", token, env=agent_env).returncode == 0
    device_id = _enrolled_device_id(agent_env, live_server)
    answer = live_server.request(
        "POST", f"/api/devices/{device_id}/revoke", live_server.admin_token
    )
    assert answer.status_code == 200, answer.text

    refused = run_agent(*args, env=agent_env)

    assert refused.returncode == ExitCode.AUTH
    assert "revoked or deleted" in _one_error_line(refused.stderr)

    # With a token (the prototype's variable), it enrolls again and delivers what waited.
    renewed = run_agent(*args, env=dict(agent_env, MONITOR_AUTH_TOKEN=token))
    assert renewed.returncode == 0, renewed.stderr
    assert "enrolling again" in renewed.stderr
    assert _seqs(live_server, "revoked") == [0, 1, 2]


def test_outage_over_several_intervals_then_every_report_once_and_in_order(
    live_server: LiveServer, agent_env: dict[str, str]
) -> None:
    token = live_server.enrollment_token()
    args = ("--token", token, "--server", live_server.url, "--device", "outage")
    with _running_agent(*args, "--interval", "0.4", env=agent_env) as agent:
        assert wait_for(lambda: len(_seqs(live_server, "outage")) >= 2, timeout=20)
        live_server.stop()
        spool_dir = _spool_dir(agent_env, live_server)
        assert wait_for(lambda: len(list(spool_dir.glob("*.json.gz"))) >= 5, timeout=20)
        live_server.start()
        assert wait_for(lambda: len(_seqs(live_server, "outage")) >= 10, timeout=40)

        agent.send_signal(signal.SIGTERM)
        _, stderr = agent.communicate(timeout=30)

    assert agent.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "stopped;" in stderr.splitlines()[-1]
    assert "server unreachable" in stderr
    # Whatever the stop left in the spool goes with the next run.
    assert run_agent("--once", "--server", live_server.url, "--device", "outage",
                     env=agent_env).returncode == 0  # fmt: skip
    seqs = _seqs(live_server, "outage")
    assert seqs == list(range(len(seqs)))  # each once, in order, none missing


def _dropped_reports(server: LiveServer, device_name: str) -> int:
    database = sqlite3.connect(f"file:{server.data_dir / 'smartmon.db'}?mode=ro", uri=True)
    try:
        row = database.execute(
            "SELECT dropped_reports FROM devices WHERE name = ?", (device_name,)
        ).fetchone()
    finally:
        database.close()
    return int(row[0])


def _spool_drops(spool_dir: Path) -> int:
    # Read the counter file, not Spool(): opening a spool cleans up the running agent's
    # half-written files.
    try:
        return int((spool_dir / "dropped").read_bytes() or b"0")
    except FileNotFoundError:
        return 0


def test_a_full_spool_drops_the_oldest_and_the_server_learns_how_many(
    live_server: LiveServer, agent_env: dict[str, str]
) -> None:
    token = live_server.enrollment_token()
    args = ("--token", token, "--server", live_server.url, "--device", "bounded")
    spool_dir = _spool_dir(agent_env, live_server)
    # 1 kB holds less than one report: during the outage only the newest is kept.
    with _running_agent(
        *args, "--interval", "0.3", "--spool-max-mb", "0.001", env=agent_env
    ) as agent:
        assert wait_for(lambda: len(_seqs(live_server, "bounded")) >= 1, timeout=20)
        live_server.stop()
        assert wait_for(lambda: _spool_drops(spool_dir) >= 3, timeout=20)
        assert len(list(spool_dir.glob("*.json.gz"))) == 1
        live_server.start()
        assert wait_for(lambda: _dropped_reports(live_server, "bounded") >= 3, timeout=40)
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=30)
    assert run_agent("--once", "--server", live_server.url, "--device", "bounded",
                     env=agent_env).returncode == 0  # fmt: skip

    seqs = _seqs(live_server, "bounded")
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
    never_arrived = set(range(seqs[-1] + 1)) - set(seqs)
    assert never_arrived and _dropped_reports(live_server, "bounded") == len(never_arrived)


def test_kill_9_during_an_outage_loses_nothing(
    live_server: LiveServer, agent_env: dict[str, str]
) -> None:
    token = live_server.enrollment_token()
    args = ("--token", token, "--server", live_server.url, "--device", "killed")
    spool_dir = _spool_dir(agent_env, live_server)
    with _running_agent(*args, "--interval", "0.3", env=agent_env) as agent:
        assert wait_for(lambda: len(_seqs(live_server, "killed")) >= 1, timeout=20)
        live_server.stop()
        assert wait_for(lambda: len(list(spool_dir.glob("*.json.gz"))) >= 4, timeout=20)
        os.kill(agent.pid, signal.SIGKILL)
        agent.wait(timeout=10)

    spool = Spool(spool_dir, 64 << 20)
    waiting = [entry.seq for entry in spool.reports()]
    assert len(waiting) >= 4
    for entry in spool.reports():  # every spooled report is whole and valid
        assert wire.decode_report(gzip.decompress(entry.read())).seq == entry.seq

    live_server.start()
    done = run_agent("--once", "--server", live_server.url, "--device", "killed", env=agent_env)

    assert done.returncode == 0, done.stderr
    seqs = _seqs(live_server, "killed")
    assert seqs == list(range(len(seqs))) and set(waiting) <= set(seqs)


def test_sigint_keeps_the_current_report_and_exits_0(
    live_server: LiveServer, agent_env: dict[str, str]
) -> None:
    token = live_server.enrollment_token()
    args = ("--token", token, "--server", live_server.url, "--device", "interrupted")
    with _running_agent(*args, "--interval", "30", env=agent_env) as agent:
        assert wait_for(lambda: len(_seqs(live_server, "interrupted")) == 1, timeout=20)
        agent.send_signal(signal.SIGINT)
        _, stderr = agent.communicate(timeout=30)

    assert agent.returncode == 0
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.splitlines()[-1].startswith("stopped;")


def _modules_after(argv: list[str], env: dict[str, str], listing: Path) -> set[str]:
    """Run a smartmon entry point in a fresh interpreter and list the modules it imported."""
    if argv[0].endswith(".py"):
        start = "runpy.run_path(sys.argv[0], run_name='__main__')"
    else:
        start = "runpy.run_module('smartmon', run_name='__main__', alter_sys=True)"
    probe = (
        "import atexit, json, runpy, sys\n"
        f"atexit.register(lambda: open({str(listing)!r}, 'w').write(json.dumps(list(sys.modules))))\n"
        f"sys.argv = {argv!r}\n"
        f"{start}\n"
    )
    done = subprocess.run(
        [agent_command()[0], "-c", probe], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(listing.read_text()))


@pytest.mark.parametrize("entry", ["agent command", "smartmon CLI"])
def test_the_agent_never_imports_the_server_or_the_tui(
    live_server: LiveServer, agent_env: dict[str, str], tmp_path: Path, entry: str
) -> None:
    token = live_server.enrollment_token()
    args = ["--once", "--token", token, "--server", live_server.url, "--device", "lean"]
    argv = agent_command(*args)[1:] if entry == "agent command" else ["smartmon", "agent", *args]

    modules = _modules_after(argv, agent_env, tmp_path / "modules.json")

    assert "smartmon.agent.run" in modules  # it really ran the agent
    heavy = {name for name in modules if name.split(".")[0] in {"textual", "litestar", "aiosqlite"}}
    assert heavy == set()
    # Nor httpx: about 9 MB of resident memory the agent's budget cannot afford (sender.py).
    assert "httpx" not in modules
