"""Admin: list, create and change accounts."""

from __future__ import annotations

import sqlite3

from litestar import get, patch, post
from litestar.di import Provide
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED

from smartmon import api
from smartmon.server import store
from smartmon.server.errors import ApiError, not_found
from smartmon.server.routes.auth import create_account
from smartmon.server.state import CallerDep, ServerDep, admin

ADMIN = {"who": Provide(admin)}


@get("/api/users", tags=["users"], dependencies=ADMIN)
async def list_users(who: CallerDep, server: ServerDep) -> list[api.UserOut]:
    """Every account."""
    return [user.out() for user in await store.list_users(server.db)]


@post("/api/users", status_code=HTTP_201_CREATED, tags=["users"], dependencies=ADMIN)
async def create_user(
    who: CallerDep, data: JSONBody[api.CreateUserBody], server: ServerDep
) -> api.UserOut:
    """Create an account with a role, whether or not registration is open."""
    user = await create_account(server, data, data.role, self_service=False)
    return user.out()


@patch("/api/users/{user_id:int}", tags=["users"], dependencies=ADMIN)
async def update_user(
    who: CallerDep, user_id: FromPath[int], data: JSONBody[api.UpdateUserBody], server: ServerDep
) -> api.UserOut:
    """Change a role or disable an account; a disabled user's tokens stop working at once."""
    target = await store.user_by_id(server.db, user_id)
    if target is None:
        raise not_found("user")
    if target.id == who.user.id and (data.disabled or data.role == "user"):
        raise ApiError(
            409,
            "admins cannot disable or demote themselves",
            field="role" if data.role else "disabled",
        )

    def change(conn: sqlite3.Connection) -> None:
        store.update_user(conn, user_id, data.role, data.disabled)

    await server.db.write(change)
    if data.disabled:  # the account's device keys stop working at once, like its tokens
        server.forget_all_keys()
    updated = await store.user_by_id(server.db, user_id)
    assert updated is not None
    return updated.out()


handlers = [list_users, create_user, update_user]
