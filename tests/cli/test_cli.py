"""The CLI with CliRunner against a real server on a loopback port."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from smartmon import __version__
from smartmon.cli import app
from tests.cli.conftest import credentials_file, one_line_error, saved, smartmon
from tests.conftest import ADMIN_PASSWORD, LiveServer

ROOT_PASSWORD = "root-password-1"


def register(url: str, username: str = "root", password: str = ROOT_PASSWORD) -> None:
    r = smartmon(
        "register",
        "--server",
        url,
        "--username",
        username,
        "--password-stdin",
        input=password + "\n",
    )
    assert r.exit_code == 0, r.output
    assert r.stdout == ""


def test_register_login_whoami_logout(live_server: LiveServer, isolated_home: Path) -> None:
    url = live_server.url
    register(url)
    logins = saved(isolated_home)
    assert list(logins) == [url]
    assert logins[url]["username"] == "root"
    token = logins[url]["token"]
    assert stat.S_IMODE(credentials_file(isolated_home).parent.stat().st_mode) == 0o700
    who = smartmon("whoami")
    assert who.exit_code == 0
    assert who.stdout.strip() == f"root (admin) on {url}"
    # login replaces the entry for this server: still one entry
    r = smartmon(
        "login",
        "--server",
        url + "/",
        "--username",
        "root",
        "--password-stdin",
        input="root-password-1\n",
    )
    assert r.exit_code == 0, r.output
    assert list(saved(isolated_home)) == [url]
    new_token = saved(isolated_home)[url]["token"]
    assert new_token != token
    out = smartmon("logout")
    assert out.exit_code == 0, out.output
    # revoked on the server, forgotten here
    assert live_server.request("GET", "/api/auth/me", new_token).status_code == 401
    assert live_server.request("GET", "/api/auth/me", token).status_code == 200
    assert url not in saved(isolated_home)
    line = one_line_error(smartmon("whoami", "--server", url), 4)
    assert "not logged in" in line and url in line
    one_line_error(smartmon("logout", "--server", url), 4)


def test_one_entry_per_server(live_server: LiveServer, isolated_home: Path) -> None:
    register(live_server.url)
    other = live_server.url.replace("127.0.0.1", "localhost")
    r = smartmon(
        "login",
        "--server",
        other,
        "--username",
        "root",
        "--password-stdin",
        input="root-password-1\n",
    )
    assert r.exit_code == 0, r.output
    assert sorted(saved(isolated_home)) == sorted([live_server.url, other])
    # the most recent login is the default server
    assert smartmon("whoami").stdout.strip().endswith(other)
    assert smartmon("whoami", "--server", live_server.url).exit_code == 0
    assert smartmon("logout", "--server", other).exit_code == 0
    assert list(saved(isolated_home)) == [live_server.url]


def test_token_create_list_revoke(live_server: LiveServer) -> None:
    register(live_server.url)
    created = smartmon("token", "create", "--name", "field kit", "--expires-days", "7")
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert created.stdout == token + "\n", "stdout is only the token"
    assert token.startswith("smt_")
    listing = smartmon("token", "list")
    assert listing.exit_code == 0 and "field kit" in listing.stdout
    assert token not in listing.output
    as_json = smartmon("token", "list", "--json")
    (entry,) = json.loads(as_json.stdout)
    assert entry["name"] == "field kit" and entry["status"] == "active" and "token" not in entry
    enroll = live_server.request("POST", "/api/monitor/register", token, json={"deviceName": "kit"})
    assert enroll.status_code == 200
    revoked = smartmon("token", "revoke", str(entry["id"]))
    assert revoked.exit_code == 0 and revoked.stdout == ""
    assert (
        live_server.request(
            "POST", "/api/monitor/register", token, json={"deviceName": "kit2"}
        ).status_code
        == 401
    )
    assert "revoked" in smartmon("token", "list").stdout
    line = one_line_error(smartmon("token", "revoke", "424242"), 5)
    assert "not found" in line
    assert smartmon("token", "create", "--expires-days", "0").exit_code == 2


def test_devices_table_and_json(live_server: LiveServer) -> None:
    register(live_server.url)
    empty = smartmon("devices", "--json")
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []
    token = smartmon("token", "create").stdout.strip()
    r = live_server.request("POST", "/api/monitor/register", token, json={"deviceName": "meter-7"})
    key = r.json()["deviceKey"]
    report = {
        "reportId": "9d3c3e0e-0000-4000-8000-000000000001", "seq": 1, "collectedAt": "2026-01-01T00:00:00Z",
        "intervalS": 10, "connections": [{"protocol": "TCP", "sourceIp": "10.0.0.2", "sourcePort": 4000,
                                           "destIp": "192.0.2.44", "destPort": 443, "state": "ESTABLISHED"}],
    }  # fmt: skip
    assert (
        live_server.request("POST", "/api/monitor/connections", key, json=report).status_code == 200
    )
    table = smartmon("devices")
    assert table.exit_code == 0, table.output
    assert "meter-7" in table.stdout and "online" in table.stdout and "192.0.2.44" in table.stdout
    (device,) = json.loads(smartmon("devices", "--json").stdout)
    assert (
        device["deviceName"] == "meter-7"
        and device["connectionCount"] == 1
        and device["status"] == "online"
    )


def test_wrong_password_and_not_logged_in(live_server: LiveServer, isolated_home: Path) -> None:
    live_server.admin_token  # noqa: B018
    r = smartmon(
        "login",
        "--server",
        live_server.url,
        "--username",
        "admin",
        "--password-stdin",
        input="nope-nope-1\n",
    )
    line = one_line_error(r, 4)
    assert "wrong username or password" in line
    assert not credentials_file(isolated_home).exists()
    for args in (("whoami",), ("devices",), ("token", "list"), ("token", "create")):
        one_line_error(smartmon(*args, "--server", live_server.url), 4)
    # a revoked saved token is an auth error too, not a crash
    r = smartmon(
        "login",
        "--server",
        live_server.url,
        "--username",
        "admin",
        "--password-stdin",
        input=ADMIN_PASSWORD + "\n",
    )
    assert r.exit_code == 0
    live_server.request("POST", "/api/auth/logout", saved(isolated_home)[live_server.url]["token"])
    one_line_error(smartmon("devices"), 4)


def test_server_refusal_is_exit_5(live_server: LiveServer) -> None:
    live_server.admin_token  # noqa: B018
    r = smartmon(
        "register",
        "--server",
        live_server.url,
        "--username",
        "x",
        "--password-stdin",
        input="long-enough-1\n",
    )
    assert r.exit_code in (4, 5)
    assert "Traceback" not in r.output and r.stderr.strip()


def test_unreachable_server_is_exit_3(no_server: str) -> None:
    for args in (
        ("login", "--server", no_server, "--username", "x"),
        ("register", "--server", no_server, "--username", "xyz"),
    ):
        line = one_line_error(smartmon(*args, "--password-stdin", input="secret-pass-1\n"), 3)
        assert no_server in line
    line = one_line_error(smartmon("whoami", "--server", no_server, "--token", "abc"), 3)
    assert no_server in line


def test_server_url_resolution_order(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nothing saved, nothing set: the default
    assert "http://127.0.0.1:8000" in one_line_error(smartmon("whoami"), 4)
    register(live_server.url)  # the saved login's server
    assert smartmon("whoami").exit_code == 0
    monkeypatch.setenv("MONITOR_SERVER_URL", "http://127.0.0.1:3")
    assert "http://127.0.0.1:3" in one_line_error(smartmon("whoami"), 4)
    monkeypatch.setenv("SMARTMON_SERVER", "127.0.0.1:2/")
    assert "http://127.0.0.1:2" in one_line_error(smartmon("whoami"), 4)
    assert "http://127.0.0.1:1" in one_line_error(
        smartmon("whoami", "--server", "http://127.0.0.1:1"), 4
    )
    assert smartmon("whoami", "--server", live_server.url).exit_code == 0


def test_access_token_from_flag_or_environment(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = live_server.admin_token
    r = smartmon("whoami", "--server", live_server.url, "--token", token)
    assert r.exit_code == 0 and r.stdout.startswith("admin (admin)")
    monkeypatch.setenv("SMARTMON_ACCESS_TOKEN", token)
    assert smartmon("whoami", "--server", live_server.url).exit_code == 0
    monkeypatch.setenv("SMARTMON_ACCESS_TOKEN", "forged.token.value")
    one_line_error(smartmon("whoami", "--server", live_server.url), 4)


def test_version() -> None:
    for flag in ("--version", "-V"):
        r = smartmon(flag)
        assert r.exit_code == 0 and r.stdout.strip() == f"smartmon {__version__}"


def _command_paths() -> list[tuple[str, ...]]:
    root = typer.main.get_command(app)
    paths: list[tuple[str, ...]] = [()]

    def walk(group: Any, prefix: tuple[str, ...]) -> None:
        for name, command in group.commands.items():
            paths.append((*prefix, name))
            if hasattr(command, "commands"):
                walk(command, (*prefix, name))

    walk(root, ())
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "smartmon")
def test_help_on_every_command(path: tuple[str, ...]) -> None:
    r = smartmon(*path, "--help")
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.stdout
    assert "Traceback" not in r.output


def test_required_commands_exist() -> None:
    names = {" ".join(p) for p in _command_paths()}
    assert {
        "serve",
        "register",
        "login",
        "logout",
        "whoami",
        "devices",
        "token",
        "token create",
        "token list",
        "token revoke",
    } <= names


def test_corrupt_credentials_file_is_not_a_crash(
    live_server: LiveServer, isolated_home: Path
) -> None:
    path = credentials_file(isolated_home)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    line = one_line_error(smartmon("whoami", "--server", live_server.url), 4)
    assert "not logged in" in line
    register(live_server.url)
    assert list(saved(isolated_home)) == [live_server.url]


def test_logout_when_server_is_gone_still_forgets(
    live_server: LiveServer, isolated_home: Path
) -> None:
    register(live_server.url)
    live_server.stop()
    r = smartmon("logout")
    assert r.exit_code == 0
    assert "Traceback" not in r.output
    assert live_server.url not in saved(isolated_home)
    assert "stays valid" in r.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(live_server.url + "/api/health", timeout=1)
