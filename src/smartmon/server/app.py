"""The Litestar application factory. Nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator

from litestar import Litestar, get
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from smartmon import __version__
from smartmon.server import store
from smartmon.server.auth import LoginLimiter, TokenSigner
from smartmon.server.db import Database
from smartmon.server.errors import handle_exception
from smartmon.server.ingest import Ingest
from smartmon.server.middleware import decompress_requests, security_headers
from smartmon.server.routes import auth, dashboard, monitor, tokens, users
from smartmon.server.routes.monitor import INGEST_GROUP
from smartmon.server.state import ServerState, server_state
from smartmon.server.stream import EventHub, channels_plugin, stream
from smartmon.settings import ServerSettings

log = logging.getLogger("smartmon.server")
PRUNE_EVERY_S = 600.0


@get("/api/health", tags=["meta"])
async def health() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "ok", "version": __version__}


async def _prune_forever(server: ServerState) -> None:
    settings = server.settings
    while True:
        now = time.time()
        samples_before = now - settings.samples_hours * 3600
        history_before = now - settings.history_days * 86400
        chunk = functools.partial(
            store.prune, samples_before=samples_before, history_before=history_before
        )
        try:
            deleted = await server.db.write(chunk)
            while deleted:  # one chunk per write job: queued ingest runs in between
                deleted = await server.db.write(chunk)
        except Exception as exc:  # keep serving; try again next round
            log.warning("pruning old history failed: %s", exc)
        await asyncio.sleep(PRUNE_EVERY_S)


def create_app(settings: ServerSettings) -> Litestar:
    """Build the app; the database opens in the lifespan, on app.state.server."""
    secret = settings.load_jwt_secret()
    channels = channels_plugin()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        db = await Database.open(settings.database_path)
        ingest = Ingest()
        db.grouped[INGEST_GROUP] = ingest.apply
        db.on_rollback.append(ingest.forget)
        server = ServerState(
            settings=settings,
            db=db,
            signer=TokenSigner(secret, settings.access_token_hours * 3600),
            ingest=ingest,
            limiter=LoginLimiter(settings.login_attempts, settings.login_window_s),
            revoked=await store.revoked_jtis(db),
            hub=EventHub(channels),
        )
        server.hub.track(await store.device_deadlines(db))
        app.state.server = server
        background = [
            asyncio.create_task(_prune_forever(server), name="smartmon-prune"),
            asyncio.create_task(server.hub.watch_offline(server), name="smartmon-offline"),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await db.close()
            log.info("database closed")

    cors = CORSConfig(allow_origins=list(settings.cors_origins)) if settings.cors_origins else None
    return Litestar(
        route_handlers=[
            health,
            *auth.handlers,
            *users.handlers,
            *tokens.handlers,
            *monitor.handlers,
            *dashboard.handlers,
            stream,
        ],
        plugins=[channels],
        dependencies={"server": Provide(server_state, sync_to_thread=False)},
        lifespan=[lifespan],
        exception_handlers={Exception: handle_exception},
        middleware=[DefineMiddleware(decompress_requests(settings.max_body_bytes))],
        before_send=[security_headers],
        cors_config=cors,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="smartmon",
            version=__version__,
            path="/schema",
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                    "deviceKey": SecurityScheme(
                        type="http", scheme="bearer", description="smd_... device key"
                    ),
                },
            ),
            security=[{"bearer": []}],
        ),
        state=State({}),
        debug=False,
        logging_config=None,
    )
