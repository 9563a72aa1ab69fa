"""`smartmon agent` options: flags, environment, precedence and usage errors."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
import typer
from typer.testing import CliRunner

from smartmon.agent import run
from smartmon.agent.command import agent
from smartmon.exit_codes import ExitCode

app = typer.Typer()
app.command("agent")(agent)


class _Captured:
    settings: ClassVar[list[run.AgentSettings]] = []

    def __init__(self, settings: run.AgentSettings, **_: object) -> None:
        self.settings.append(settings)

    def run(self) -> None:
        """Record instead of running."""


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[run.AgentSettings]:
    _Captured.settings = []
    monkeypatch.setattr(run, "Agent", _Captured)
    return _Captured.settings


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_defaults(captured: list[run.AgentSettings], tmp_path: Path) -> None:
    code, _ = _invoke(env={"XDG_STATE_HOME": str(tmp_path)})

    assert code == 0
    settings = captured[0]
    assert settings.server == "http://127.0.0.1:8000"
    assert settings.interval_s == 10.0 and settings.token is None
    assert settings.state_dir == tmp_path / "smartmon" / "agent"
    assert settings.spool_max_bytes == 64 * 1024 * 1024
    assert settings.collector == "auto" and settings.verbosity == run.NORMAL
    assert settings.device_name  # the hostname


def test_the_prototype_environment_is_honoured(captured: list[run.AgentSettings]) -> None:
    env = {
        "MONITOR_AUTH_TOKEN": "smt_env",
        "MONITOR_DEVICE_NAME": "Smart Meter 1",
        "MONITOR_SERVER_URL": "meters.example:3000",
        "MONITOR_REFRESH_INTERVAL": "30",
    }

    assert _invoke(env=env)[0] == 0

    settings = captured[0]
    assert (settings.token, settings.device_name) == ("smt_env", "Smart Meter 1")
    assert settings.server == "http://meters.example:3000"
    assert settings.interval_s == 30.0


def test_smartmon_names_beat_the_prototype_names_and_flags_beat_both(
    captured: list[run.AgentSettings],
) -> None:
    env = {
        "MONITOR_AUTH_TOKEN": "smt_old",
        "SMARTMON_TOKEN": "smt_new",
        "MONITOR_DEVICE_NAME": "old",
        "SMARTMON_DEVICE_NAME": "new",
        "MONITOR_SERVER_URL": "http://old:1",
        "SMARTMON_SERVER": "http://new:2",
        "MONITOR_REFRESH_INTERVAL": "5",
        "SMARTMON_INTERVAL": "6",
    }
    _invoke(env=env)
    _invoke(
        "--token", "smt_flag", "--device", "flag", "--server", "http://flag:3",
        "--interval", "7", env=env,
    )  # fmt: skip

    from_env, from_flags = captured
    assert (from_env.token, from_env.device_name, from_env.server, from_env.interval_s) == (
        "smt_new", "new", "http://new:2", 6.0,
    )  # fmt: skip
    assert (from_flags.token, from_flags.device_name, from_flags.server) == (
        "smt_flag", "flag", "http://flag:3",
    )  # fmt: skip
    assert from_flags.interval_s == 7.0


def test_the_saved_login_names_the_server_when_nothing_else_does(
    captured: list[run.AgentSettings],
) -> None:
    from smartmon import credentials

    credentials.save(credentials.Login("http://fleet.example:8000", "ops", "access-token"))

    _invoke()
    _invoke(env={"MONITOR_SERVER_URL": "http://env.example:1"})

    assert [settings.server for settings in captured] == [
        "http://fleet.example:8000",
        "http://env.example:1",
    ]


def test_every_option(captured: list[run.AgentSettings], tmp_path: Path) -> None:
    code, _ = _invoke(
        "--once", "--dry-run", "--state-dir", str(tmp_path), "--spool-max-mb", "0.5",
        "--collector", "psutil", "-v",
    )  # fmt: skip

    assert code == 0
    settings = captured[0]
    assert settings.once and settings.dry_run and settings.state_dir == tmp_path
    assert settings.spool_max_bytes == 512 * 1024
    assert settings.collector == "psutil" and settings.verbosity == run.VERBOSE
    assert _invoke("-q")[0] == 0 and captured[1].verbosity == run.QUIET


@pytest.mark.parametrize(
    "args",
    [
        ("-v", "-q"),
        ("--interval", "0"),
        ("--interval", "soon"),
        ("--collector", "pyroute2"),
        ("--spool-max-mb", "0"),
        ("--server", "gopher://host:70"),
    ],
)
def test_usage_errors(captured: list[run.AgentSettings], args: tuple[str, ...]) -> None:
    code, output = _invoke(*args)

    assert code == ExitCode.USAGE
    assert "Traceback" not in output
    assert captured == []


def test_agent_exit_becomes_one_line_and_its_code(monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        def __init__(self, settings: run.AgentSettings, **_: object) -> None:
            pass

        def run(self) -> None:
            raise run.AgentExit(ExitCode.AUTH, "the device key was revoked")

    monkeypatch.setattr(run, "Agent", Refusing)

    code, output = _invoke()

    assert code == ExitCode.AUTH
    assert output.strip() == "smartmon: the device key was revoked"


def test_help_lists_the_options() -> None:
    code, output = _invoke("--help")

    assert code == 0
    for option in ("--token", "--device", "--server", "--interval", "--once", "--dry-run",
                   "--state-dir", "--spool-max-mb", "--collector", "--verbose", "--quiet"):  # fmt: skip
        assert option in output
