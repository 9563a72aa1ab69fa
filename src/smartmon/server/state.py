"""What a running server holds (kept on app.state) and how a request proves who it is."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from smartmon.server import store
from smartmon.server.auth import (
    DEVICE_KEY_PREFIX,
    ENROLLMENT_PREFIX,
    InvalidToken,
    LoginLimiter,
    TokenSigner,
    secret_hash,
)
from smartmon.server.db import Database
from smartmon.server.errors import ApiError, unauthorized
from smartmon.server.ingest import Ingest
from smartmon.settings import ServerSettings

if TYPE_CHECKING:
    from smartmon.server.stream import EventHub


class ServerState:
    """The resources of one server process, opened in the app's lifespan.

    A plain class, not a dataclass: Litestar's signature model would try to convert it.
    """

    def __init__(
        self,
        settings: ServerSettings,
        db: Database,
        signer: TokenSigner,
        ingest: Ingest,
        limiter: LoginLimiter,
        revoked: set[str],
        hub: EventHub,
    ) -> None:
        self.settings = settings
        self.db = db
        self.signer = signer
        self.ingest = ingest
        self.limiter = limiter
        self.hub = hub
        self.revoked = revoked  # jti of revoked access tokens that have not expired
        # hash of a device key -> device id; dropped on revocation, deletion and re-enrollment
        self.device_keys: dict[bytes, int] = {}
        self.key_generation = 0  # bumped on every revocation, so a racing lookup is not cached

    def forget_key(self, key_hash: bytes | None) -> None:
        """A device key stops working at once."""
        self.key_generation += 1
        if key_hash is not None:
            self.device_keys.pop(key_hash, None)

    def forget_all_keys(self) -> None:
        """Every device key is looked up again (after an account was disabled)."""
        self.key_generation += 1
        self.device_keys.clear()


def server_state(state: State) -> ServerState:
    """Dependency: the ServerState of the app."""
    server: ServerState = state.server
    return server


def bearer(request: Request[Any, Any, Any]) -> str | None:
    """The Bearer token of a request, if it sent one."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


class Caller:
    """An authenticated user and the access token they used."""

    __slots__ = ("expires_at", "jti", "token", "user")

    def __init__(self, user: store.User, jti: str, expires_at: float, token: str) -> None:
        self.user = user
        self.jti = jti
        self.expires_at = expires_at
        self.token = token


async def user_from_token(server: ServerState, token: str) -> Caller:
    """Verify an access token and load its (enabled) user; 401 otherwise."""
    if token.startswith((ENROLLMENT_PREFIX, DEVICE_KEY_PREFIX)):
        raise unauthorized(
            "this endpoint needs a user's access token, not an enrollment token or device key"
        )
    try:
        access = server.signer.verify(token)
    except InvalidToken:
        raise unauthorized("the access token is invalid or expired; log in again") from None
    if access.jti in server.revoked:
        raise unauthorized("the access token has been revoked; log in again")
    user = await store.user_by_id(server.db, access.user_id)
    if user is None or user.disabled:
        raise unauthorized("the account is disabled or no longer exists")
    return Caller(user, access.jti, access.expires_at, token)


async def caller(request: Request[Any, Any, Any], state: State) -> Caller:
    """Dependency: the logged-in caller (401 without a valid access token)."""
    token = bearer(request)
    if token is None:
        raise unauthorized()
    return await user_from_token(server_state(state), token)


async def admin(request: Request[Any, Any, Any], state: State) -> Caller:
    """Dependency: a logged-in admin (403 for other users)."""
    who = await caller(request, state)
    if not who.user.is_admin:
        raise ApiError(403, "this needs an admin account")
    return who


async def device_from_key(server: ServerState, key: str) -> int:
    """The device a device key belongs to; 401 for unknown or revoked keys."""
    if not key.startswith(DEVICE_KEY_PREFIX):
        raise unauthorized("reports need the device key that enrollment returned (smd_...)")
    key_hash = secret_hash(key)
    device_id = server.device_keys.get(key_hash)
    if device_id is None:
        generation = server.key_generation
        device_id = await store.device_for_key(server.db, key_hash)
        if device_id is None:
            raise unauthorized("the device key is unknown or revoked; enroll the device again")
        if generation == server.key_generation:
            server.device_keys[key_hash] = device_id
    return device_id


ServerDep = NamedDependency[ServerState]
CallerDep = NamedDependency[Caller]
