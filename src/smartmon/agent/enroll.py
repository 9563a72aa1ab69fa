"""Enrollment and the device key file: one 0600 JSON file per server in the state dir."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
from pathlib import Path

import msgspec

from smartmon import __version__, wire
from smartmon.agent.sender import Sender


class StoredDevice(wire.Struct):
    """What the agent keeps after enrolling with one server."""

    server: str
    device_id: int
    device_key: str
    device_name: str


def server_slug(server: str) -> str:
    """A file-name-safe, collision-free name for a server URL."""
    readable = re.sub(r"[^A-Za-z0-9.]+", "-", server.split("://", 1)[-1]).strip("-")[:64]
    digest = hashlib.sha256(server.encode()).hexdigest()[:8]
    return f"{readable or 'server'}-{digest}"


def agent_identity() -> tuple[str, str]:
    """(hostname, "<system> <release>") of this machine."""
    import platform

    return socket.gethostname(), f"{platform.system()} {platform.release()}".strip()


class DeviceKeys:
    """Device keys on disk, one file per server: `<state dir>/<server slug>.json`, mode 0600."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, server: str) -> Path:
        """Where the key for one server is kept."""
        return self.directory / f"{server_slug(server)}.json"

    def load(self, server: str) -> StoredDevice | None:
        """The stored device for a server, or None if there is none (or it is unreadable)."""
        try:
            data = self.path(server).read_bytes()
        except FileNotFoundError:
            return None
        try:
            device = msgspec.json.decode(data, type=StoredDevice)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None
        return device if device.server == server else None

    def save(self, device: StoredDevice) -> Path:
        """Write the key file atomically, readable by its owner only."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.path(device.server)
        temporary = path.with_name(path.name + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, msgspec.json.encode(device))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        return path

    def forget(self, server: str) -> None:
        """Delete the key of a server (it was revoked)."""
        with contextlib.suppress(FileNotFoundError):
            self.path(server).unlink()


def enroll(sender: Sender, token: str, device_name: str) -> StoredDevice:
    """Register this device with an enrollment or access token; raises SendError."""
    hostname, system = agent_identity()
    registration = wire.DeviceRegistration(
        device_name=device_name, hostname=hostname, os=system, agent_version=__version__
    )
    credentials = sender.enroll(token, registration)
    return StoredDevice(
        server=sender.base_url,
        device_id=credentials.device_id,
        device_key=credentials.device_key,
        device_name=device_name,
    )
