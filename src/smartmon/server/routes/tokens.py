"""Enrollment tokens: create (shown once), list (no secrets), revoke."""

from __future__ import annotations

import sqlite3
import time

from litestar import delete, get, post
from litestar.di import Provide
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from smartmon import api
from smartmon.server import store
from smartmon.server.auth import ENROLLMENT_PREFIX, new_secret, secret_hash
from smartmon.server.errors import not_found
from smartmon.server.state import CallerDep, ServerDep, caller

USER = {"who": Provide(caller)}


@post("/api/tokens", status_code=HTTP_201_CREATED, tags=["tokens"], dependencies=USER)
async def create_token(
    who: CallerDep, server: ServerDep, data: JSONBody[api.TokenCreateBody | None] = None
) -> api.TokenCreated:
    """A new enrollment token for agents; the secret appears only in this answer."""
    body = data or api.TokenCreateBody()
    token = new_secret(ENROLLMENT_PREFIX)
    expires_at = time.time() + body.expires_days * 86400 if body.expires_days else None
    name = body.name or time.strftime("token %Y-%m-%d %H:%M")

    def insert(conn: sqlite3.Connection) -> int:
        return store.insert_enrollment_token(
            conn, who.user.id, name, secret_hash(token), expires_at
        )

    token_id = await server.db.write(insert)
    return api.TokenCreated(
        id=token_id, name=name, token=token, expires_at=api.timestamp(expires_at)
    )


@get("/api/tokens", tags=["tokens"], dependencies=USER)
async def list_tokens(who: CallerDep, server: ServerDep) -> list[api.TokenInfo]:
    """The caller's enrollment tokens, newest first."""
    return await store.list_enrollment_tokens(server.db, who.user.id)


@delete("/api/tokens/{token_id:int}", status_code=HTTP_200_OK, tags=["tokens"], dependencies=USER)
async def revoke_token(who: CallerDep, token_id: FromPath[int], server: ServerDep) -> api.Done:
    """Revoke an enrollment token; devices already enrolled keep their keys."""
    if not await server.db.write(
        lambda conn: store.revoke_enrollment_token(conn, who.user.id, token_id)
    ):
        raise not_found("token")
    return api.Done(detail="token revoked")


handlers = [create_token, list_tokens, revoke_token]
