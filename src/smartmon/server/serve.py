"""Run the app under uvicorn: bind first (clear errors), stop cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sqlite3
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import uvicorn

from smartmon.server.app import create_app
from smartmon.server.db import Database
from smartmon.settings import ServerSettings, SettingsError

log = logging.getLogger("smartmon.server")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket; raises OSError (e.g. address in use) before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown (exit 130/-15): not here.

    A clean stop on a signal is a successful run, so `smartmon serve` exits 0.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl+C: stop waiting for in-flight requests
        else:
            self.should_exit = True


def check_database(settings: ServerSettings) -> None:
    """Create or upgrade the database before serving: a bad file fails here, in one line.

    (Inside the app's lifespan the same failure is a long traceback and uvicorn's exit 3.)
    """

    async def check() -> None:
        db = await Database.open(settings.database_path)
        await db.close()

    try:
        asyncio.run(check())
    except (RuntimeError, sqlite3.DatabaseError, OSError) as exc:
        raise SettingsError(f"cannot use the database {settings.database_path}: {exc}") from None


def run(
    settings: ServerSettings, log_level: str = "info", extra_handlers: Sequence[Any] = ()
) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish and the database closes.

    extra_handlers are registered on the app too (the benchmarks add a trivial endpoint).
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)  # loads or creates the JWT secret: fails early on a bad one
    for handler in extra_handlers:
        app.register(handler)
    sock = bind(settings.host, settings.port)
    try:
        check_database(settings)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"smartmon serving on http://{shown}:{port} (data: {settings.data_dir})",
        file=sys.stderr,
        flush=True,
    )
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        server_header=False,
        proxy_headers=False,
        ws_max_size=1 << 20,
    )
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise OSError(f"the server failed to start on {shown}:{port}; see the log above")
