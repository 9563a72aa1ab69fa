"""Agents: device enrollment and report ingest, plus the prototype's agent protocol."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, post
from litestar.params import HeaderParameter, JSONBody
from litestar.status_codes import HTTP_200_OK

from smartmon import wire
from smartmon.server import store
from smartmon.server.auth import DEVICE_KEY_PREFIX, ENROLLMENT_PREFIX, new_secret, secret_hash
from smartmon.server.errors import ApiError, unauthorized, validation_body
from smartmon.server.ingest import Applied, Incoming, LegacyIncoming
from smartmon.server.state import (
    ServerDep,
    bearer,
    device_from_key,
    server_state,
    user_from_token,
)

INGEST_GROUP = "ingest"
LEGACY_SESSION_S = 30 * 86400


@post("/api/monitor/register", status_code=HTTP_200_OK, tags=["monitor"])
async def register_device(
    data: JSONBody[wire.DeviceRegistration], server: ServerDep, request: Request[Any, Any, Any]
) -> wire.DeviceCredentials:
    """Enroll a device with an enrollment token or access token; returns its device key.

    The same deviceName again (same user) keeps the device and its history, with a new key.
    The prototype's agents send {token, deviceName} with the login token in the body.
    """
    header_token = bearer(request)
    token = header_token or data.token
    if not token:
        raise unauthorized(
            "enrollment needs an enrollment token or access token (Authorization: Bearer ...)"
        )
    owner: int | None = None
    if not token.startswith(ENROLLMENT_PREFIX):
        owner = (await user_from_token(server, token)).user.id
    key = new_secret(DEVICE_KEY_PREFIX)

    async def enroll(conn: Any) -> tuple[int, bytes | None]:
        user_id = (
            owner
            if owner is not None
            else await store.enrollment_token_owner(conn, secret_hash(token))
        )
        if user_id is None:
            raise unauthorized("the enrollment token is unknown, expired or revoked")
        device = await store.enroll_device(
            conn,
            user_id,
            data.device_name.strip(),
            secret_hash(key),
            data.hostname,
            data.os,
            data.agent_version,
        )
        if header_token is None:  # a prototype agent: its connection posts carry only this token
            await store.save_legacy_session(
                conn, secret_hash(token), device[0], time.time() + LEGACY_SESSION_S
            )
        return device

    device_id, old_key = await server.db.write(enroll)
    server.forget_key(old_key)
    return wire.DeviceCredentials(device_id=device_id, device_key=key)


class LegacyConnection(wire.Struct):
    """One connection as the prototype's agent posts it (token in the body)."""

    token: Annotated[str, msgspec.Meta(max_length=4096)]
    source_ip: Annotated[str, msgspec.Meta(max_length=128)]
    source_port: int | str
    dest_ip: Annotated[str, msgspec.Meta(max_length=128)]
    dest_port: int | str
    protocol: Annotated[str, msgspec.Meta(max_length=16)]
    state: Annotated[str, msgspec.Meta(max_length=32)] | None = None


def _legacy_port(value: int | str, field: str) -> int:
    text = str(value).strip()
    if text in ("*", ""):
        return 0
    if not text.isdigit() or int(text) > 65535:
        raise ApiError(422, f"{field} must be a port number 0-65535", field=field)
    return int(text)


def legacy_connection(body: LegacyConnection) -> wire.Connection:
    """Map a prototype connection onto the wire format (addresses as `ss` prints them)."""
    protocol = body.protocol.strip().upper()
    protocol = (
        "TCP" if protocol.startswith("TCP") else "UDP" if protocol.startswith("UDP") else protocol
    )
    if protocol not in ("TCP", "UDP"):
        raise ApiError(422, "protocol must be TCP or UDP", field="protocol")
    dest_port = _legacy_port(body.dest_port, "destPort")
    unspecified = body.dest_ip.strip() in ("*", "0.0.0.0", "[::]", "::") or dest_port == 0
    state = (body.state or "").strip().upper()
    if protocol == "TCP" and state not in wire.TCP_STATES:
        state = "LISTEN" if unspecified else "ESTABLISHED"
    if protocol == "UDP" and state not in wire.UDP_STATES:
        state = "UNCONN" if unspecified else "ESTABLISHED"
    try:
        return wire.Connection(
            protocol=protocol,  # type: ignore[arg-type]
            source_ip=body.source_ip,
            source_port=_legacy_port(body.source_port, "sourcePort"),
            dest_ip=body.dest_ip,
            dest_port=dest_port,
            state=state,
        )
    except ValueError as exc:
        raise ApiError(
            422, str(exc), field="sourceIp" if "source" in str(exc) else "destIp"
        ) from None


async def legacy_or_device(request: Request[Any, Any, Any]) -> Response[Any] | None:
    """before_request: authenticate the device key, or serve a prototype agent's post."""
    server = server_state(request.app.state)
    key = bearer(request)
    if key is not None:
        request.state.device_id = await device_from_key(server, key)
        return None
    raw = await request.body()
    if b'"token"' not in raw:
        raise unauthorized("reports need 'Authorization: Bearer <device key>'")
    try:
        body = msgspec.json.decode(raw, type=LegacyConnection)
    except msgspec.ValidationError as exc:
        error = validation_body(str(exc))
        raise ApiError(422, error.detail, field=error.field) from None
    except msgspec.DecodeError:
        raise ApiError(400, "the request body is not valid JSON", error="malformed_json") from None
    caller = await user_from_token(server, body.token)
    device_id = await store.legacy_device(server.db, secret_hash(body.token))
    if device_id is None:
        raise ApiError(
            409,
            "no device is registered with this token: POST /api/monitor/register first",
            error="not_registered",
        )
    connection = legacy_connection(body)
    applied: Applied = await server.db.write_grouped(
        INGEST_GROUP, LegacyIncoming(device_id, connection, time.time())
    )
    server.hub.applied(applied)
    del caller
    return Response({"success": True, "message": "connection recorded"}, status_code=HTTP_200_OK)


@post(
    "/api/monitor/connections",
    status_code=HTTP_200_OK,
    tags=["monitor"],
    before_request=legacy_or_device,
)
async def ingest(
    data: JSONBody[wire.Report],
    server: ServerDep,
    request: Request[Any, Any, Any],
    authorization: Annotated[
        str, HeaderParameter(name="authorization", description="Bearer <device key>")
    ],
) -> wire.IngestResult:
    """Store one batched report from a device (gzip welcome); answered once committed.

    A reportId already stored answers with duplicate=true and changes nothing.
    """
    device_id: int = request.state.device_id
    applied: Applied = await server.db.write_grouped(
        INGEST_GROUP, Incoming(device_id, data, time.time())
    )
    server.hub.applied(applied)
    return wire.IngestResult(report_id=data.report_id, duplicate=applied.duplicate)


handlers = [register_device, ingest]
