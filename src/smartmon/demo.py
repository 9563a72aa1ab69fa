"""`smartmon demo`: a server, this machine's agent, a simulated fleet and the TUI, in one command.

The server and the agent run as child processes of the demo, each in its own session so a
Ctrl+C in the terminal reaches only the demo, which then stops them in order (fleet, agent,
server) and waits for each; on Linux they also get SIGTERM if the demo itself dies. A child
process gives the server its own interpreter (its own GIL: ingest never waits on the TUI's
rendering), lets uvicorn own its main thread and signals, and keeps its log in a file
rather than on top of the TUI; the agent is the real `smartmon agent`, as it runs on any
device. The simulated fleet runs in a thread of the demo process, on its own event loop.

Everything lives in the demo data dir: the server's database and secret, the demo account's
password (0600), the agent's device key and spool, and the server and agent logs, so the
next `smartmon demo` reuses it all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

import httpx

from smartmon import credentials
from smartmon.client import ApiError, Client, ClientError
from smartmon.exit_codes import CommandError, ExitCode
from smartmon.simulate.fleet import Fleet, FleetError, FleetStatus

DEMO_USERNAME = "demo"
ACCOUNT_FILE = "demo-account.json"
AGENT_INTERVAL_S = 2.0
FLEET_INTERVAL_S = 3.0
FLEET_SEED = 5  # the same fleet on every run, so reruns reuse its devices
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
STATUS_EVERY_S = 30.0
_PR_SET_PDEATHSIG = 1


class DemoError(CommandError):
    """The demo cannot start or go on: a documented exit code and one line saying why."""


@dataclass(frozen=True)
class DemoSettings:
    """What `smartmon demo` was asked for."""

    data_dir: Path
    port: int = 8000
    devices: int = 25
    tui: bool = True


@dataclass(frozen=True)
class Account:
    """The demo account; `created` when this run registered it."""

    username: str
    password: str
    created: bool


def port_is_free(port: int) -> bool:
    """Whether the server could bind 127.0.0.1:port now (with SO_REUSEADDR, as it does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that has Linux send the child SIGTERM when the demo dies (even kill -9)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the demo died before prctl took effect
            os._exit(1)

    return preexec


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


class Demo:
    """The running parts of one demo; `start()`, then `stop()` (always, in a finally)."""

    def __init__(self, settings: DemoSettings, out: IO[str] | None = None) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.out = out or sys.stdout
        self.port = settings.port
        self.url = f"http://127.0.0.1:{self.port}"
        self.account: Account | None = None
        self.device_name = (socket.gethostname() or "this-machine")[:128]
        self.fleet: Fleet | None = None
        self.fleet_error: FleetError | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._agent: subprocess.Popen[bytes] | None = None
        self._fleet_thread: threading.Thread | None = None
        self._access_token: str | None = None
        self._token_id: int | None = None
        self._logs: list[IO[bytes]] = []
        self._agent_warned = False
        self._last_status = 0.0
        self._preexec = _die_with_parent()

    def say(self, message: str) -> None:
        """A line for the operator, on stderr."""
        print(f"smartmon demo: {message}", file=sys.stderr, flush=True)

    # ---- starting -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server, log in, start the agent and the fleet."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._start_server()
        with Client(self.url) as client:
            self.account = self._account(client)
            login = client.send(Client.login(self.account.username, self.account.password))
            self._access_token = str(login["accessToken"])
            credentials.save(credentials.Login(self.url, self.account.username, self._access_token))
            created = client.send(
                Client.create_token(self._access_token, "smartmon demo", expires_days=1)
            )
        self._token_id = int(created["id"])
        enrollment = str(created["token"])
        self._start_agent(enrollment)
        self._start_fleet(enrollment)

    def _spawn(
        self, args: list[str], log_name: str, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        log = (self.data_dir / log_name).open("ab")
        self._logs.append(log)
        return subprocess.Popen(
            [sys.executable, "-m", "smartmon", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,  # the terminal's Ctrl+C goes to the demo, which stops us
            preexec_fn=self._preexec,  # only prctl; both children start before the fleet thread
        )

    def _start_server(self) -> None:
        requested = self.settings.port
        port = requested if requested and port_is_free(requested) else free_port()
        if requested and port != requested:
            self.say(f"port {requested} is taken; using {port} instead")
        for attempt in range(2):
            self.port, self.url = port, f"http://127.0.0.1:{port}"
            env = {k: v for k, v in os.environ.items() if not k.startswith("SMARTMON_")}
            self._server = self._spawn(
                ["serve", "--host", "127.0.0.1", "--port", str(port),
                 "--data-dir", str(self.data_dir), "--log-level", "warning"],
                "server.log", env,
            )  # fmt: skip
            if self._wait_until_serving(self._server):
                return
            code = self._server.wait()
            self._server = None
            if code == ExitCode.CONFIG and attempt == 0 and not port_is_free(port):
                port = free_port()  # someone took the port meanwhile
                self.say(f"port {self.port} was taken meanwhile; using {port} instead")
                continue
            raise DemoError(
                ExitCode.CONFIG,
                f"the server did not start: {self._last_line('server.log')} "
                f"(log: {self.data_dir / 'server.log'})",
            )

    def _wait_until_serving(self, server: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if server.poll() is not None:
                return False
            try:
                if httpx.get(self.url + "/api/health", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise DemoError(ExitCode.CONFIG, f"the server did not answer within {START_TIMEOUT_S:g} s")

    def _last_line(self, log_name: str) -> str:
        try:
            lines = (self.data_dir / log_name).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1].strip() if lines else "no output"

    def _account(self, client: Client) -> Account:
        """The saved demo account, or a new one (the password kept 0600 in the data dir)."""
        path = self.data_dir / ACCOUNT_FILE
        try:
            saved = json.loads(path.read_text())
            return Account(str(saved["username"]), str(saved["password"]), created=False)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DemoError(ExitCode.CONFIG, f"{path} is unreadable ({exc}); delete it") from None
        account = Account(DEMO_USERNAME, secrets.token_urlsafe(12), created=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"username": account.username, "password": account.password}, handle)
        try:
            client.send(Client.register(account.username, account.password))
        except ApiError as exc:
            path.unlink()
            if exc.status in (403, 409):
                raise DemoError(
                    ExitCode.REJECTED,
                    f"{self.data_dir} already holds other accounts ({exc.detail}); "
                    "give the demo a fresh --data-dir",
                ) from None
            raise
        except BaseException:
            path.unlink()
            raise
        return account

    def _start_agent(self, enrollment_token: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTMON_", "MONITOR_"))}
        env["SMARTMON_TOKEN"] = enrollment_token  # not on the command line, where ps shows it
        self._agent = self._spawn(
            ["agent", "--server", self.url, "--device", self.device_name,
             "--interval", str(AGENT_INTERVAL_S), "--state-dir", str(self.data_dir / "agent"),
             "--quiet"],
            "agent.log", env,
        )  # fmt: skip

    def _start_fleet(self, enrollment_token: str) -> None:
        if self.settings.devices == 0:
            return
        self.fleet = Fleet(
            self.url,
            self.settings.devices,
            token=enrollment_token,
            interval_s=FLEET_INTERVAL_S,
            seed=FLEET_SEED,
            on_status=None if self.settings.tui else self._show_status,
        )
        self._fleet_thread = threading.Thread(
            target=self._run_fleet, args=(self.fleet,), name="smartmon-demo-fleet", daemon=True
        )
        self._fleet_thread.start()

    def _run_fleet(self, fleet: Fleet) -> None:
        try:
            asyncio.run(fleet.run())
        except FleetError as exc:
            self.fleet_error = exc

    def _show_status(self, status: FleetStatus) -> None:
        now = time.monotonic()
        if now - self._last_status >= STATUS_EVERY_S or status.last_error:
            self._last_status = now
            self.say(f"fleet: {status.line()}")

    # ---- running ------------------------------------------------------------------------------

    def banner(self) -> str:
        """The server URL, the login and what to try."""
        assert self.account is not None
        path = self.data_dir / ACCOUNT_FILE
        if self.account.created:
            login = (
                f"{self.account.username} / {self.account.password}   "
                f"(new account; the password is kept in {path})"
            )
        else:
            login = f"{self.account.username}   (password in {path})"
        fleet = f" and {self.settings.devices} simulated devices" if self.settings.devices else ""
        return "\n".join(
            (
                "smartmon demo is running",
                f"  server   {self.url}   (data: {self.data_dir})",
                f"  login    {login}",
                f"  devices  this machine ({self.device_name}){fleet}",
                f"  try      smartmon devices --server {self.url}",
                f"           smartmon tui --server {self.url}",
            )
        )

    def check(self) -> None:
        """Raise DemoError if the server stopped; warn once if the agent did."""
        if self._server is not None and self._server.poll() is not None:
            raise DemoError(
                ExitCode.ERROR,
                f"the server stopped: {self._last_line('server.log')} "
                f"(log: {self.data_dir / 'server.log'})",
            )
        if self._agent is not None and self._agent.poll() is not None and not self._agent_warned:
            self._agent_warned = True
            self.say(
                f"this machine's agent stopped: {self._last_line('agent.log')} "
                f"(log: {self.data_dir / 'agent.log'})"
            )
        if self.fleet_error is not None:
            error, self.fleet_error = self.fleet_error, None
            self.say(f"the simulated fleet stopped: {error.message}")

    def wait(self) -> None:
        """Run headless until Ctrl+C or SIGTERM (raised here as KeyboardInterrupt)."""
        while True:
            self.check()
            time.sleep(0.5)

    def run_tui(self) -> int:
        """Open the dashboard; returns its exit code once the operator quits."""
        from smartmon.tui.app import SmartmonApp

        app = SmartmonApp(self.url, credentials.load(self.url))
        app.run()
        return int(app.return_code or 0)

    # ---- stopping -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the fleet, the agent and the server, in that order, and wait for each."""
        with _ignoring_interrupts():
            if self.fleet is not None and self._fleet_thread is not None:
                self.fleet.stop()
                self._fleet_thread.join(timeout=STOP_TIMEOUT_S)
            self._terminate(self._agent)
            self._agent = None
            self._revoke_token()
            self._terminate(self._server)
            self._server = None
            for log in self._logs:
                log.close()
            self._logs.clear()

    def _revoke_token(self) -> None:
        """The demo's enrollment token is of no use once the demo stops."""
        if self._token_id is None or self._access_token is None or self._server is None:
            return
        with contextlib.suppress(ClientError), Client(self.url, timeout=3.0) as client:
            client.send(Client.revoke_token(self._access_token, self._token_id))
        self._token_id = None

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes] | None) -> None:
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _ignoring_interrupts() -> Iterator[None]:
    """A second Ctrl+C must not cut the shutdown short and leave a child behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run(settings: DemoSettings, out: IO[str] | None = None) -> int:
    """Run the demo until the TUI quits or Ctrl+C; returns the exit code."""
    previous: Any = signal.signal(signal.SIGTERM, _interrupt)
    # a shell without job control starts background commands with SIGINT ignored
    previous_int: Any = signal.signal(signal.SIGINT, signal.default_int_handler)
    demo = Demo(settings, out)
    stream = demo.out
    code = 0
    try:
        try:
            demo.start()
        except ClientError as exc:
            raise DemoError(ExitCode.ERROR, f"setting up the demo failed: {exc}") from None
        print(demo.banner(), file=stream, flush=True)
        if settings.tui:
            code = demo.run_tui()
            demo.check()  # what went wrong behind the dashboard, if anything
        else:
            print("Ctrl+C stops everything.", file=stream, flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                demo.wait()
    finally:
        demo.stop()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    if settings.tui:  # the dashboard took the screen: say again where things are
        print(f"smartmon demo stopped; the data stays in {settings.data_dir}", file=stream)
    else:
        print("smartmon demo stopped.", file=stream, flush=True)
    return code
