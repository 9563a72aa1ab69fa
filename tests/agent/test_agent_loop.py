"""The agent loop against a scripted server on loopback: enrollment, outages, spool, errors, output."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_fakes import FakeServer, ScriptedCollector, error_answer

from smartmon.agent.delivery import Backoff
from smartmon.agent.enroll import DeviceKeys, StoredDevice, server_slug
from smartmon.agent.run import QUIET, Agent, AgentExit, AgentSettings
from smartmon.agent.spool import Spool
from smartmon.exit_codes import ExitCode


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """The scripted server, listening on loopback."""
    fake = FakeServer()
    with fake.running():
        yield fake


def _settings(state_dir: Path, server: FakeServer, **changes: object) -> AgentSettings:
    values: dict[str, object] = {
        "server": server.url,
        "device_name": "meter-1",
        "state_dir": state_dir,
        "token": "smt_enroll",
        "interval_s": 0.05,
    }
    values.update(changes)
    return AgentSettings(**values)  # type: ignore[arg-type]


def _run(
    settings: AgentSettings,
    collector: ScriptedCollector | None = None,
    log: io.StringIO | None = None,
) -> Agent:
    agent = Agent(
        settings,
        collector=collector or ScriptedCollector(),
        log=log or io.StringIO(),
        backoff=Backoff(base=0.01, cap=0.05),
    )
    agent.run()
    return agent


def _spool(state_dir: Path, server: FakeServer) -> Spool:
    return Spool(state_dir / "spool" / server_slug(server.url), 64 << 20)


def _stop_after(polls: int, agent_box: list[Agent]) -> ScriptedCollector:
    def hook(count: int) -> None:
        if count >= polls:
            agent_box[0].stop()

    return ScriptedCollector(hook)


def test_first_run_enrolls_and_keeps_the_key_private(tmp_path: Path, server: FakeServer) -> None:

    _run(_settings(tmp_path, server, once=True))

    key_file = DeviceKeys(tmp_path).path(server.url)
    assert key_file.parent == tmp_path and key_file.suffix == ".json"
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    stored = json.loads(key_file.read_text())
    assert stored["deviceKey"] in server.keys and stored["server"] == server.url
    assert server.seqs == [0]

    # Later runs need no token.
    _run(_settings(tmp_path, server, once=True, token=None))
    assert server.seqs == [0, 1]
    assert [path for _, path in server.attempts].count("/api/monitor/register") == 1


def test_one_key_file_per_server(tmp_path: Path) -> None:
    keys = DeviceKeys(tmp_path)
    paths = {keys.path(url) for url in ("http://a:8000", "https://a:8000", "http://a:8001")}
    assert len(paths) == 3
    assert all(path.name.replace("-", "").replace(".", "").isalnum() for path in paths)


def test_without_key_or_token_it_says_how_to_enroll(tmp_path: Path, server: FakeServer) -> None:
    with pytest.raises(AgentExit) as stopped:
        _run(_settings(tmp_path, server, once=True, token=None))

    assert stopped.value.code == ExitCode.AUTH
    assert "--token" in stopped.value.message


def test_outage_then_every_report_arrives_once_in_order(tmp_path: Path, server: FakeServer) -> None:
    server.down = True
    agent_box: list[Agent] = []

    def hook(polls: int) -> None:
        if polls == 8:
            server.down = False  # the server comes back after several intervals
        if polls == 16:
            agent_box[0].stop()

    agent = Agent(
        _settings(tmp_path, server),
        collector=ScriptedCollector(hook),
        log=io.StringIO(),
        backoff=Backoff(base=0.01, cap=0.05),
    )
    agent_box.append(agent)
    agent.run()

    waiting = [entry.seq for entry in _spool(tmp_path, server).reports()]
    assert server.seqs == sorted(set(server.seqs))  # in order, none twice
    assert server.seqs + waiting == list(range(16))  # nothing lost: sent or still spooled
    assert len(server.seqs) >= 14


def test_a_full_spool_reaches_the_server_as_dropped_reports(
    tmp_path: Path, server: FakeServer
) -> None:
    server.down = True
    agent_box: list[Agent] = []

    def hook(polls: int) -> None:
        if polls == 12:
            server.down = False
        if polls == 16:
            agent_box[0].stop()

    agent = Agent(
        _settings(tmp_path, server, spool_max_bytes=2_500),
        collector=ScriptedCollector(hook),
        log=io.StringIO(),
        backoff=Backoff(base=0.01, cap=0.05),
    )
    agent_box.append(agent)
    agent.run()

    _run(_settings(tmp_path, server, once=True))  # delivers what the stop left behind

    spool = _spool(tmp_path, server)
    assert len(spool) == 0
    lost = sorted(set(range(17)) - set(server.seqs))
    assert lost and lost == list(range(len(lost)))  # the oldest went first
    assert spool.dropped == len(lost)
    # Reports carry the running total, so the newest one the server has tells it all.
    assert server.stored[-1].dropped_reports == len(lost)
    totals = [report.dropped_reports for report in server.stored]
    assert totals == sorted(totals)


def test_revoked_key_without_token_exits_with_auth_and_keeps_the_report(
    tmp_path: Path, server: FakeServer
) -> None:
    DeviceKeys(tmp_path).save(StoredDevice(server.url, 1, "smd_revoked", "meter-1"))

    with pytest.raises(AgentExit) as stopped:
        _run(_settings(tmp_path, server, once=True, token=None))

    assert stopped.value.code == ExitCode.AUTH
    assert "revoked" in stopped.value.message
    assert len(_spool(tmp_path, server)) == 1


def test_revoked_key_with_token_enrolls_again(tmp_path: Path, server: FakeServer) -> None:
    DeviceKeys(tmp_path).save(StoredDevice(server.url, 1, "smd_revoked", "meter-1"))

    _run(_settings(tmp_path, server, once=True))

    assert server.seqs == [0]
    saved = DeviceKeys(tmp_path).load(server.url)
    assert saved is not None and saved.device_key in server.keys


def test_a_rejected_token_exits_with_auth(tmp_path: Path, server: FakeServer) -> None:
    with pytest.raises(AgentExit) as stopped:
        _run(_settings(tmp_path, server, once=True, token="smt_wrong"))

    assert stopped.value.code == ExitCode.AUTH
    assert "enrollment token" in stopped.value.message


def test_once_while_unreachable_exits_3_then_delivers_both_in_order(
    tmp_path: Path, server: FakeServer
) -> None:
    server.down = True

    with pytest.raises(AgentExit) as stopped:
        _run(_settings(tmp_path, server, once=True))
    assert stopped.value.code == ExitCode.UNREACHABLE
    assert "kept in the spool" in stopped.value.message
    assert len(_spool(tmp_path, server)) == 1

    server.down = False
    _run(_settings(tmp_path, server, once=True))
    assert server.seqs == [0, 1]


def test_server_errors_are_retried_and_retry_after_is_honoured(
    tmp_path: Path, server: FakeServer
) -> None:
    _run(_settings(tmp_path, server, once=True))  # enrolled
    server.attempts.clear()
    server.answers = [error_answer(503), error_answer(429, retry_after="0.3")]

    _run(_settings(tmp_path, server, once=True))

    times = [at for at, _ in server.attempts]
    assert len(times) == 3 and server.seqs == [0, 1]
    assert times[2] - times[1] >= 0.3


def test_a_refused_report_is_dropped_counted_and_not_retried(
    tmp_path: Path, server: FakeServer
) -> None:
    _run(_settings(tmp_path, server, once=True))
    server.answers = [error_answer(422, "bad report")]
    log = io.StringIO()

    _run(_settings(tmp_path, server, once=True), log=log)
    _run(_settings(tmp_path, server, once=True))

    assert server.seqs == [0, 2]
    assert [report.dropped_reports for report in server.stored] == [0, 1]
    assert "refused report 1" in log.getvalue()


def test_dry_run_prints_the_report_and_touches_nothing(tmp_path: Path, server: FakeServer) -> None:
    out = io.StringIO()
    state_dir = tmp_path / "state"

    Agent(
        _settings(state_dir, server, dry_run=True, token=None),
        collector=ScriptedCollector(),
        out=out,
    ).run()

    report = json.loads(out.getvalue())
    assert report["connections"][0]["destPort"] == 443
    assert report["agent"]["capabilities"]["collector"] == "netlink"
    assert server.attempts == [] and not state_dir.exists()


def test_one_line_per_cycle_and_none_when_quiet(tmp_path: Path, server: FakeServer) -> None:
    agent_box: list[Agent] = []
    log = io.StringIO()
    agent = Agent(
        _settings(tmp_path / "a", server),
        collector=_stop_after(4, agent_box),
        log=log,
    )
    agent_box.append(agent)
    agent.run()

    # The fourth cycle is cut short by the stop: its report stays in the spool.
    cycles = [line for line in log.getvalue().splitlines() if " collected " in line]
    assert len(cycles) == 3
    assert "stopped; 1 report(s) kept in the spool" in log.getvalue()
    assert "collected 1 connections (0 closed), sent 1, spooled 0, dropped 0" in cycles[-1]

    quiet_box: list[Agent] = []
    quiet_log = io.StringIO()
    quiet = Agent(
        _settings(tmp_path / "b", server, verbosity=QUIET),
        collector=_stop_after(3, quiet_box),
        log=quiet_log,
    )
    quiet_box.append(quiet)
    quiet.run()
    assert quiet_log.getvalue() == ""


def test_a_second_agent_on_the_same_spool_refuses_to_start(
    tmp_path: Path, server: FakeServer
) -> None:
    running = Spool(tmp_path / "spool" / server_slug(server.url), 1 << 20, exclusive=True)
    try:
        with pytest.raises(AgentExit) as stopped:
            _run(_settings(tmp_path, server, once=True))
    finally:
        running.close()

    assert stopped.value.code == ExitCode.CONFIG
    assert "another agent" in stopped.value.message
    _run(_settings(tmp_path, server, once=True))  # free again once the first one is gone
    assert server.seqs == [0]
