"""The `smartmon` command line. Each command imports its part lazily, so startup stays fast."""

from __future__ import annotations

import contextlib
import getpass
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from smartmon import __version__
from smartmon.exit_codes import ExitCode, fail

app = typer.Typer(
    name="smartmon",
    help="Watch every device in your fleet, and every connection each one holds, live.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
token_app = typer.Typer(help="Enrollment tokens for agents.", no_args_is_help=True)
app.add_typer(token_app, name="token")

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--server",
        "-s",
        help="Server URL (env SMARTMON_SERVER or MONITOR_SERVER_URL; default: the saved login's).",
    ),
]
AccessTokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Access token to use instead of the saved login (env SMARTMON_ACCESS_TOKEN).",
        show_default=False,
    ),
]


@contextlib.contextmanager
def client_errors() -> Iterator[None]:
    """Turn client exceptions into one line and an exit code."""
    from smartmon.client import ApiError, ServerUnreachable

    try:
        yield
    except ServerUnreachable as exc:
        fail(f"{exc} (is `smartmon serve` running there?)", ExitCode.UNREACHABLE)
    except ApiError as exc:
        if exc.status in (401, 403):
            fail(exc.detail, ExitCode.AUTH)
        if exc.status == 429:
            fail(exc.detail, ExitCode.AUTH)
        fail(f"{exc.detail} ({exc.status})", ExitCode.REJECTED)


def server_url(flag: str | None) -> str:
    """--server > env > the most recent saved login's server > default."""
    from smartmon import credentials
    from smartmon.settings import resolve_server

    return resolve_server(flag, credentials.last_server())


class Session:
    """A client for a server plus the access token to use with it."""

    def __init__(self, server_flag: str | None, token_flag: str | None) -> None:
        from smartmon import credentials
        from smartmon.client import Client

        self.server = server_url(server_flag)
        token = token_flag or os.environ.get("SMARTMON_ACCESS_TOKEN")
        if not token:
            login = credentials.load(self.server)
            if login is None:
                fail(
                    f"not logged in to {self.server}: run `smartmon login --server {self.server}`",
                    ExitCode.AUTH,
                )
            token = login.token
        self.token = token
        self.client = Client(self.server)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"smartmon {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """smartmon: server, agent and terminal dashboard for fleets of networked devices."""


# ---- serve -------------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(envvar="SMARTMON_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="SMARTMON_PORT", min=0, max=65535, help="Port to listen on.")
    ] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="SMARTMON_DATA_DIR",
            help="Where smartmon.db and jwt-secret live (default: $XDG_DATA_HOME/smartmon).",
        ),
    ] = None,
    open_registration: Annotated[
        bool,
        typer.Option(
            envvar="SMARTMON_OPEN_REGISTRATION",
            help="Let anyone register (normally only the first account may).",
        ),
    ] = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            envvar="SMARTMON_CORS_ORIGINS",
            help="Allow browser access from this origin (repeatable).",
        ),
    ] = None,
    token_hours: Annotated[
        float,
        typer.Option(
            envvar="SMARTMON_TOKEN_HOURS",
            min=0.01,
            max=24 * 366,
            help="Access token lifetime in hours.",
        ),
    ] = 12.0,
    samples_hours: Annotated[
        float,
        typer.Option(
            envvar="SMARTMON_SAMPLES_HOURS",
            min=1,
            help="Keep traffic samples and report ids this long.",
        ),
    ] = 48.0,
    history_days: Annotated[
        float,
        typer.Option(
            envvar="SMARTMON_HISTORY_DAYS", min=0.01, help="Keep closed connections this long."
        ),
    ] = 7.0,
    log_level: Annotated[
        str, typer.Option(envvar="SMARTMON_LOG_LEVEL", help="debug, info, warning or error.")
    ] = "info",
) -> None:
    """Run the API server on SQLite (Ctrl+C stops it cleanly)."""
    from smartmon.server.serve import run
    from smartmon.settings import ServerSettings, SettingsError, jwt_secret_from_env
    from smartmon.settings import data_dir as default_data_dir

    settings = ServerSettings(
        data_dir=(data_dir or default_data_dir()).expanduser().resolve(),
        host=host,
        port=port,
        open_registration=open_registration,
        cors_origins=tuple(cors_origin or ()),
        jwt_secret=jwt_secret_from_env(),
        access_token_hours=token_hours,
        samples_hours=samples_hours,
        history_days=history_days,
    )
    try:
        run(settings, log_level=log_level.lower())
    except SettingsError as exc:
        fail(str(exc), ExitCode.CONFIG)
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc.strerror or exc}", ExitCode.CONFIG)


# ---- accounts ----------------------------------------------------------------------------------


def _read_password(password_stdin: bool, confirm: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            fail("no terminal to ask for the password: use --password-stdin", ExitCode.USAGE)
        password = getpass.getpass("Password: ")
        if confirm and getpass.getpass("Repeat password: ") != password:
            fail("the passwords do not match", ExitCode.USAGE)
    if not password:
        fail("the password is empty", ExitCode.USAGE)
    return password


def _ask_username(username: str | None) -> str:
    if username:
        return username
    if not sys.stdin.isatty():
        fail("give --username (no terminal to ask for it)", ExitCode.USAGE)
    return str(typer.prompt("Username"))


def _save_login(server: str, result: dict[str, Any]) -> None:
    from smartmon import credentials

    credentials.save(credentials.Login(server, result["user"]["username"], result["accessToken"]))
    typer.echo(
        f"Logged in to {server} as {result['user']['username']} ({result['user']['role']}).",
        err=True,
    )


UsernameOption = Annotated[
    str | None, typer.Option("--username", "-u", help="Account name (asked if missing).")
]
PasswordStdinOption = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from the first line of stdin.")
]


@app.command()
def register(
    server: ServerOption = None,
    username: UsernameOption = None,
    password_stdin: PasswordStdinOption = False,
    email: Annotated[str | None, typer.Option(help="Optional e-mail address.")] = None,
) -> None:
    """Create an account (the first one on a server is its admin) and log in."""
    from smartmon.client import Client

    url = server_url(server)
    name = _ask_username(username)
    password = _read_password(password_stdin, confirm=True)
    with client_errors(), Client(url) as client:
        result = client.send(Client.register(name, password, email))
    _save_login(url, result)


@app.command()
def login(
    server: ServerOption = None,
    username: UsernameOption = None,
    password_stdin: PasswordStdinOption = False,
) -> None:
    """Log in and save the access token for this server (0600)."""
    from smartmon.client import Client

    url = server_url(server)
    name = _ask_username(username)
    password = _read_password(password_stdin, confirm=False)
    with client_errors(), Client(url) as client:
        result = client.send(Client.login(name, password))
    _save_login(url, result)


@app.command()
def logout(server: ServerOption = None) -> None:
    """Revoke the saved token on the server and forget it."""
    from smartmon import credentials
    from smartmon.client import ApiError, Client, ServerUnreachable

    url = server_url(server)
    saved = credentials.load(url)
    if saved is None:
        fail(f"not logged in to {url}", ExitCode.AUTH)
    warning = None
    with Client(url) as client:
        try:
            client.send(Client.logout(saved.token))
        except ApiError as exc:
            if exc.status != 401:  # 401: already expired or revoked, nothing to revoke
                warning = exc.detail
        except ServerUnreachable as exc:
            warning = f"{exc}; the token was forgotten here but stays valid until it expires"
    credentials.forget(url)
    if warning:
        typer.echo(f"smartmon: {warning}", err=True)
    typer.echo(f"Logged out of {url}.", err=True)


@app.command()
def whoami(server: ServerOption = None, token: AccessTokenOption = None) -> None:
    """Show the logged-in user and the server."""
    from smartmon.client import Client

    session = Session(server, token)
    with client_errors(), session.client:
        me = session.client.send(Client.me(session.token))
    typer.echo(f"{me['username']} ({me['role']}) on {session.server}")


# ---- enrollment tokens ----------------------------------------------------------------------------


@token_app.command("create")
def token_create(
    name: Annotated[str | None, typer.Option("--name", "-n", help="A label for the token.")] = None,
    expires_days: Annotated[
        float | None,
        typer.Option("--expires-days", min=0.001, max=3650, help="Expire after this many days."),
    ] = None,
    server: ServerOption = None,
    token: AccessTokenOption = None,
) -> None:
    """Create an enrollment token; prints only the token, so T=$(smartmon token create) works."""
    from smartmon.client import Client

    session = Session(server, token)
    with client_errors(), session.client:
        created = session.client.send(Client.create_token(session.token, name, expires_days))
    typer.echo(created["token"])


@token_app.command("list")
def token_list(
    server: ServerOption = None,
    token: AccessTokenOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List enrollment tokens (never their secrets)."""
    from smartmon.client import Client

    session = Session(server, token)
    with client_errors(), session.client:
        tokens = session.client.send(Client.list_tokens(session.token))
    if as_json:
        import json

        typer.echo(json.dumps(tokens, indent=2))
        return
    from rich.table import Table

    table = Table("ID", "Name", "Status", "Created", "Expires", "Last used", box=None)
    for t in tokens:
        table.add_row(
            str(t["id"]), t["name"], t["status"], _short_time(t["createdAt"]),
            _short_time(t["expiresAt"]) or "never", _short_time(t["lastUsedAt"]) or "-",
        )  # fmt: skip
    _table_console().print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[
        int, typer.Argument(help="The token's ID (see `smartmon token list`).", min=1)
    ],
    server: ServerOption = None,
    token: AccessTokenOption = None,
) -> None:
    """Revoke an enrollment token (devices it enrolled keep working)."""
    from smartmon.client import Client

    session = Session(server, token)
    with client_errors(), session.client:
        session.client.send(Client.revoke_token(session.token, token_id))
    typer.echo(f"Token {token_id} revoked.", err=True)


# ---- devices ------------------------------------------------------------------------------------


def _table_console() -> Any:
    """A console for tables: natural width when piped, so `| grep NAME` sees whole names."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=1000)


def _short_time(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else ""


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B/s", "KB/s", "MB/s", "GB/s"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B/s" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB/s"


@app.command()
def devices(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON list of devices.")
    ] = False,
    server: ServerOption = None,
    token: AccessTokenOption = None,
) -> None:
    """List devices with their status, connections and traffic."""
    from smartmon.client import Client

    session = Session(server, token)
    with client_errors(), session.client:
        listing = session.client.send(Client.devices(session.token))
    if as_json:
        import json

        typer.echo(json.dumps(listing["data"], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    stats = listing["stats"]
    table = Table(
        "ID", "Device", "Owner", "Status", "Conns", "Protocols", "Top IPs", "In", "Out", "Last seen",
        title=(
            f"{stats['totalDevices']} devices, {stats['onlineDevices']} online, "
            f"{stats['activeConnections']} connections"
        ),
    )  # fmt: skip
    for d in listing["data"]:
        status = "[green]● online[/]" if d["status"] == "online" else "[red]○ offline[/]"
        table.add_row(
            str(d["id"]), d["deviceName"], d["username"], status, str(d["connectionCount"]),
            ",".join(d["protocols"]), ", ".join(d["uniqueIps"][:3]), _rate(d["bytesInRate"]),
            _rate(d["bytesOutRate"]), _short_time(d["lastSeen"]) or "never",
        )  # fmt: skip
    if not listing["data"]:
        Console(stderr=True).print(
            f"No devices yet. Enroll one with:\n  smartmon agent --token $(smartmon token create) --server {session.server}"
        )
        return
    _table_console().print(table)


def _register_agent() -> None:
    from smartmon.demo_command import demo
    from smartmon.simulate.command import simulate
    from smartmon.tui.command import tui

    app.command("tui")(tui)
    app.command("simulate")(simulate)
    app.command("demo")(demo)
    try:
        from smartmon.agent.command import agent
    except ImportError:  # the agent part is not installed in this build
        return
    app.command("agent")(agent)


_register_agent()


def main() -> None:
    """Console-script entry point."""
    app(prog_name="smartmon")
