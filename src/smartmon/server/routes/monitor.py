"""Agents: device enrollment and report ingest, plus the prototype's agent protocol."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Request, Response, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from smartmon import wire
from smartmon.server import store
from smartmon.server.auth import DEVICE_KEY_PREFIX, ENROLLMENT_PREFIX, new_secret, secret_hash
from smartmon.server.errors import ApiError, unauthorized, validation_body
from smartmon.server.ingest import Applied, Incoming, LegacyIncoming
from smartmon.server.state import (
    ServerDep,
    ServerState,
    bearer,
    device_from_key,
    server_state,
    user_from_token,
)

INGEST_GROUP = "ingest"
LEGACY_SESSION_S = 30 * 86400
T = TypeVar("T")


@post("/api/monitor/register", status_code=HTTP_200_OK, tags=["monitor"])
async def register_device(
    data: JSONBody[wire.DeviceRegistration], server: ServerDep, request: Request[Any, Any, Any]
) -> wire.DeviceCredentials:
    """Enroll a device with an enrollment token or access token; returns its device key.

    The same deviceName again (same user) keeps the device and its history, with a new key.
    The prototype's agents send {token, deviceName} with the login token in the body.
    """
    name = data.device_name.strip()
    if not name:
        raise ApiError(422, "deviceName must not be blank", field="deviceName")
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

    def enroll(conn: sqlite3.Connection) -> tuple[int, bytes | None]:
        user_id = (
            owner if owner is not None else store.enrollment_token_owner(conn, secret_hash(token))
        )
        if user_id is None:
            raise unauthorized("the enrollment token is unknown, expired or revoked")
        device = store.enroll_device(
            conn,
            user_id,
            name,
            secret_hash(key),
            data.hostname,
            data.os,
            data.agent_version,
        )
        if header_token is None:  # a prototype agent: its connection posts carry only this token
            store.save_legacy_session(
                conn, secret_hash(token), device[0], time.time() + LEGACY_SESSION_S
            )
        return device

    device_id, old_key = await server.db.write(enroll)
    server.forget_key(old_key)
    enrolled = await store.device_row(server.db, device_id)
    if enrolled is not None:  # dashboards show a new device before its first report
        server.hub.device_changed(store.device_out(enrolled, time.time()), enrolled["user_id"])
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
    for field, value in (("sourceIp", body.source_ip), ("destIp", body.dest_ip)):
        try:
            wire.normalise_ip(value)
        except ValueError as exc:
            raise ApiError(422, str(exc), field=field) from None
    return wire.Connection(
        protocol=protocol,  # type: ignore[arg-type]
        source_ip=body.source_ip,
        source_port=_legacy_port(body.source_port, "sourcePort"),
        dest_ip=body.dest_ip,
        dest_port=dest_port,
        state=state,
    )


def decode_body(raw: bytes, kind: type[T]) -> T:
    """Decode and validate a JSON body; 400 for malformed JSON, 422 naming the bad field."""
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        error = validation_body(str(exc))
        raise ApiError(422, error.detail, field=error.field) from None
    except msgspec.DecodeError:
        raise ApiError(400, "the request body is not valid JSON", error="malformed_json") from None


async def legacy_ingest(server: ServerState, raw: bytes) -> Response[bytes]:
    """A prototype agent's post: one connection, its login token in the body."""
    if b'"token"' not in raw:
        raise unauthorized("reports need 'Authorization: Bearer <device key>'")
    body = decode_body(raw, LegacyConnection)
    await user_from_token(server, body.token)
    device_id = await store.legacy_device(server.db, secret_hash(body.token))
    if device_id is None:
        raise ApiError(
            409,
            "no device is registered with this token: POST /api/monitor/register first",
            error="not_registered",
        )
    connection = legacy_connection(body)
    incoming = LegacyIncoming(device_id, connection, time.time())
    server.hub.applied(await server.db.write_grouped(INGEST_GROUP, incoming))
    return Response(
        b'{"success":true,"message":"connection recorded"}', media_type="application/json"
    )


# The body is decoded straight into wire.Report by msgspec (no detour through dicts), so
# the handler takes raw bytes; this documents the body in the OpenAPI schema instead.
def _inline(schema: Any, definitions: dict[str, Any]) -> Any:
    """A JSON schema with every local $ref replaced by its definition (Report has no cycles)."""
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return _inline(definitions[ref.rsplit("/", 1)[-1]], definitions)
        return {k: _inline(v, definitions) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline(v, definitions) for v in schema]
    return schema


_REPORT_JSON_SCHEMA = msgspec.json.schema(wire.Report)
REPORT_SCHEMA = _inline(_REPORT_JSON_SCHEMA, _REPORT_JSON_SCHEMA.get("$defs", {}))


@dataclass
class ReportOperation(Operation):
    """OpenAPI operation of the ingest endpoint, with the Report body."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="A Report from an agent (Content-Encoding: gzip welcome), or, from the "
            "prototype's agents, one {token, sourceIp, sourcePort, destIp, destPort, protocol}.",
            content={"application/json": OpenAPIMediaType(schema=REPORT_SCHEMA)},
        )


@post(
    "/api/monitor/connections",
    status_code=HTTP_200_OK,
    tags=["monitor"],
    operation_class=ReportOperation,
    security=[{"deviceKey": []}],
    responses={200: ResponseSpec(wire.IngestResult, description="Stored (or a duplicate)")},
)
async def ingest(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Store one batched report from a device (gzip welcome); answered once committed.

    A reportId already stored answers with duplicate=true and changes nothing.
    """
    # the hottest endpoint: no dependency injection, and the answer encoded once by msgspec
    server = server_state(request.app.state)
    key = bearer(request)
    raw = await request.body()
    if key is None:
        return await legacy_ingest(server, raw)
    device_id = await device_from_key(server, key)
    report = decode_body(raw, wire.Report)
    applied: Applied = await server.db.write_grouped(
        INGEST_GROUP, Incoming(device_id, report, time.time())
    )
    server.hub.applied(applied)
    result = wire.IngestResult(report_id=report.report_id, duplicate=applied.duplicate)
    return Response(msgspec.json.encode(result), media_type="application/json")


handlers = [register_device, ingest]
