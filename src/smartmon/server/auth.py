"""Passwords (argon2id), access tokens (HS256 JWT), secret tokens, and the login limiter."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

JWT_ALGORITHM = "HS256"
ENROLLMENT_PREFIX = "smt_"
DEVICE_KEY_PREFIX = "smd_"

_hasher = PasswordHasher()  # argon2id with argon2-cffi's default (RFC 9106 low-memory) parameters
# Verifying against this when the username is unknown makes both failures cost the same.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


async def hash_password(password: str) -> str:
    """argon2id hash, computed off the event loop."""
    return await asyncio.to_thread(_hasher.hash, password)


@dataclass(frozen=True)
class PasswordCheck:
    """The outcome of a password verification."""

    ok: bool
    new_hash: str | None = None  # set when the stored hash used outdated parameters


def _verify(stored: str | None, password: str) -> PasswordCheck:
    try:
        _hasher.verify(stored or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return PasswordCheck(False)
    if stored is None:
        return PasswordCheck(False)
    if _hasher.check_needs_rehash(stored):
        return PasswordCheck(True, _hasher.hash(password))
    return PasswordCheck(True)


async def verify_password(stored: str | None, password: str) -> PasswordCheck:
    """Check a password; stored=None (unknown user) costs the same as a real check."""
    return await asyncio.to_thread(_verify, stored, password)


def new_secret(prefix: str) -> str:
    """A url-safe secret of 192 random bits with a recognisable prefix."""
    return prefix + secrets.token_urlsafe(24)


def secret_hash(value: str) -> bytes:
    """How high-entropy secrets are stored: SHA-256 (no salt needed at 192 bits)."""
    return hashlib.sha256(value.encode()).digest()


@dataclass(frozen=True)
class AccessToken:
    """A decoded, verified access token."""

    user_id: int
    jti: str
    expires_at: float


class InvalidToken(Exception):
    """The token is malformed, forged, expired or of the wrong kind."""


@dataclass(frozen=True)
class TokenSigner:
    """Issues and verifies HS256 access tokens with one secret."""

    secret: bytes
    lifetime_s: float

    def issue(self, user_id: int, role: str) -> tuple[str, float]:
        """A new token and its expiry (epoch seconds)."""
        now = int(time.time())
        expires_at = now + int(self.lifetime_s)
        claims = {
            "sub": str(user_id),
            "role": role,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": expires_at,
        }
        return jwt.encode(claims, self.secret, algorithm=JWT_ALGORITHM), float(expires_at)

    def verify(self, token: str) -> AccessToken:
        """Decode with the algorithm pinned; raises InvalidToken for anything wrong."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=[JWT_ALGORITHM],
                options={"require": ["sub", "jti", "iat", "exp"]},
            )
            return AccessToken(int(claims["sub"]), str(claims["jti"]), float(claims["exp"]))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            raise InvalidToken(str(exc)) from None


@dataclass
class LoginLimiter:
    """Counts failed logins per username and per client address in a sliding window.

    An address with too many failures is refused outright. A username with too many
    failures is refused to every address that took part in them, so the real user, from
    an address with a clean record, can still log in.
    """

    attempts: int = 10
    window_s: float = 15 * 60
    _by_address: dict[str, deque[float]] = field(default_factory=dict)
    _by_user: dict[str, deque[tuple[float, str]]] = field(default_factory=dict)
    _swept_at: float = 0.0

    def _trim(self, now: float, username: str, address: str) -> None:
        """Expire old failures of these keys; every minute, of all keys (bounded work)."""
        horizon = now - self.window_s
        tables: list[tuple[dict[str, Any], list[str]]] = [
            (self._by_address, [address]),
            (self._by_user, [username]),
        ]
        if now - self._swept_at > 60:
            self._swept_at = now
            tables = [
                (self._by_address, list(self._by_address)),
                (self._by_user, list(self._by_user)),
            ]
        for table, keys in tables:
            for key in keys:
                entries = table.get(key)
                while entries and _stamp(entries[0]) <= horizon:
                    entries.popleft()
                if entries is not None and not entries:
                    del table[key]

    def retry_after(self, username: str, address: str, now: float | None = None) -> float | None:
        """Seconds until this attempt may be made, or None when it may be made now."""
        now = time.monotonic() if now is None else now
        username = username.lower()
        self._trim(now, username, address)
        waits: list[float] = []
        by_address = self._by_address.get(address)
        if by_address is not None and len(by_address) >= self.attempts:
            waits.append(by_address[-self.attempts] + self.window_s - now)
        by_user = self._by_user.get(username)
        if (
            by_user is not None
            and len(by_user) >= self.attempts
            and any(source == address for _, source in by_user)
        ):
            waits.append(by_user[-self.attempts][0] + self.window_s - now)
        return max(1.0, max(waits)) if waits else None

    def failed(self, username: str, address: str, now: float | None = None) -> None:
        """Record one failed login."""
        now = time.monotonic() if now is None else now
        # bounded: an address is refused after `attempts` failures, and a username keeps
        # only its most recent failures (enough to know which addresses took part)
        self._by_address.setdefault(address, deque(maxlen=self.attempts * 2)).append(now)
        self._by_user.setdefault(username.lower(), deque(maxlen=self.attempts * 20)).append(
            (now, address)
        )


def _stamp(entry: float | tuple[float, str]) -> float:
    return entry[0] if isinstance(entry, tuple) else entry
