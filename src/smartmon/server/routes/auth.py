"""Accounts: register, login, logout, me."""

from __future__ import annotations

import sqlite3
from typing import Any

from litestar import Request, get, post
from litestar.di import Provide
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from smartmon import api
from smartmon.server import store
from smartmon.server.auth import hash_password, verify_password
from smartmon.server.errors import ApiError, unauthorized
from smartmon.server.state import CallerDep, ServerDep, caller


def client_address(request: Request[Any, Any, Any]) -> str:
    """The peer address (the server is meant to face clients directly or via loopback)."""
    return request.client.host if request.client else "unknown"


def login_result(server: ServerDep, user: store.User) -> api.LoginResult:
    """A fresh access token for a user."""
    token, expires_at = server.signer.issue(user.id, user.role)
    return api.LoginResult(
        access_token=token,
        expires_at=api.timestamp(expires_at),
        user=user.out(),
    )


async def create_account(
    server: ServerDep,
    body: api.RegisterBody | api.CreateUserBody,
    role: str | None,
    *,
    self_service: bool,
) -> store.User:
    """Hash the password, then create the account in one write."""
    password_hash = await hash_password(body.password)

    def insert(conn: sqlite3.Connection) -> store.User:
        if self_service and not server.settings.open_registration and store.count_users(conn) > 0:
            raise ApiError(
                403,
                "registration is closed: ask an admin to create your account "
                "(or start the server with --open-registration)",
                error="registration_closed",
            )
        return store.insert_user(conn, body.username, password_hash, role, body.email)

    return await server.db.write(insert)


@post("/api/auth/register", status_code=HTTP_201_CREATED, tags=["auth"])
async def register(data: JSONBody[api.RegisterBody], server: ServerDep) -> api.LoginResult:
    """Create an account (the first one becomes admin) and log it in."""
    user = await create_account(server, data, None, self_service=True)
    return login_result(server, user)


@post("/api/auth/login", status_code=HTTP_200_OK, tags=["auth"])
async def login(
    data: JSONBody[api.LoginBody], server: ServerDep, request: Request[Any, Any, Any]
) -> api.LoginResult:
    """Exchange a username and password for an access token."""
    address = client_address(request)
    wait = server.limiter.retry_after(data.username, address)
    if wait is not None:
        raise ApiError(
            429,
            f"too many failed logins; try again in {int(wait)} seconds",
            headers={"retry-after": str(int(wait))},
        )
    user = await store.user_by_name(server.db, data.username)
    check = await verify_password(user.password_hash if user else None, data.password)
    if user is None or not check.ok or user.disabled:
        server.limiter.failed(data.username, address)
        raise unauthorized("wrong username or password")
    if check.new_hash is not None:
        new_hash = check.new_hash
        await server.db.write(lambda conn: store.set_password_hash(conn, user.id, new_hash))
    return login_result(server, user)


@post(
    "/api/auth/logout",
    status_code=HTTP_200_OK,
    tags=["auth"],
    dependencies={"who": Provide(caller)},
)
async def logout(who: CallerDep, server: ServerDep) -> api.Done:
    """Revoke the access token this request carries, at once."""
    await server.db.write(lambda conn: store.revoke_jti(conn, who.jti, who.expires_at))
    server.revoked.add(who.jti)
    return api.Done(detail="logged out")


@get("/api/auth/me", tags=["auth"], dependencies={"who": Provide(caller)})
async def me(who: CallerDep) -> api.UserOut:
    """The logged-in user."""
    return who.user.out()


handlers = [register, login, logout, me]
