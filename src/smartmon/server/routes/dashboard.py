"""The dashboard: the device list with fleet stats, one device in detail, device removal."""

from __future__ import annotations

import sqlite3
import time
from typing import Annotated, Any, Literal

from litestar import delete, get, post
from litestar.di import Provide
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_200_OK

from smartmon import api
from smartmon.server import store
from smartmon.server.errors import not_found
from smartmon.server.state import CallerDep, ServerDep, caller

USER = {"who": Provide(caller)}


async def owned_device(server: ServerDep, who: CallerDep, device_id: FromPath[int]) -> Any:
    """The device row if the caller may see it; 404 (never 403) otherwise."""
    row = await store.device_row(server.db, device_id)
    if row is None or (row["user_id"] != who.user.id and not who.user.is_admin):
        raise not_found("device")
    return row


@get("/api/dashboard/users", tags=["dashboard"], dependencies=USER)
async def list_devices(who: CallerDep, server: ServerDep) -> api.DeviceList:
    """Devices visible to the caller (admins: all) with fleet stats."""
    devices = await store.list_devices(server.db, None if who.user.is_admin else who.user.id)
    return api.DeviceList(stats=store.fleet_stats(devices), data=devices)


@get("/api/dashboard/user/{device_id:int}", tags=["dashboard"], dependencies=USER)
async def device_detail(
    who: CallerDep,
    device_id: FromPath[int],
    server: ServerDep,
    protocol: Annotated[
        Literal["TCP", "UDP", "tcp", "udp"] | None, QueryParameter(description="TCP or UDP")
    ] = None,
    state_filter: Annotated[
        str | None, QueryParameter(name="state", max_length=16, description="e.g. ESTABLISHED")
    ] = None,
    q: Annotated[
        str | None, QueryParameter(max_length=128, description="IP, port or process")
    ] = None,
    closed: Annotated[
        bool, QueryParameter(description="closed connections (history) instead")
    ] = False,
    limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, QueryParameter(ge=0, le=10_000_000)] = 0,
) -> api.DeviceDetailResponse:
    """One device: connections (filtered), summary, last hour of traffic, destinations."""
    row = await owned_device(server, who, device_id)
    flt = store.ConnectionFilter(protocol, state_filter, q, closed, limit, offset)
    connections, matched = await store.device_connections(server.db, row, flt)
    now = time.time()
    device = store.device_out(row, now)
    detail = api.DeviceDetail(
        **{f: getattr(device, f) for f in device.__struct_fields__},
        connections=connections,
        matched_connections=matched,
        summary=await store.connection_summary(server.db, device_id),
        traffic=await store.traffic(server.db, device_id, now - store.TRAFFIC_WINDOW_S),
        destinations=await store.destinations(server.db, row),
    )
    return api.DeviceDetailResponse(data=detail)


@delete(
    "/api/dashboard/user/{device_id:int}",
    status_code=HTTP_200_OK,
    tags=["dashboard"],
    dependencies=USER,
)
async def delete_device(who: CallerDep, device_id: FromPath[int], server: ServerDep) -> api.Done:
    """Delete a device and all its data (owner or admin)."""
    row = await owned_device(server, who, device_id)

    def remove(conn: sqlite3.Connection) -> None:
        store.delete_device(conn, device_id)
        server.ingest.forget(device_id)  # the writer's cache, in the writer's thread

    await server.db.write(remove)
    server.forget_key(row["key_hash"])
    server.hub.device_removed(device_id, row["user_id"])
    return api.Done(detail="device deleted")


@post(
    "/api/devices/{device_id:int}/revoke",
    status_code=HTTP_200_OK,
    tags=["dashboard"],
    dependencies=USER,
)
async def revoke_device(who: CallerDep, device_id: FromPath[int], server: ServerDep) -> api.Done:
    """Revoke a device's key; its data stays, and enrolling again gives a new key."""
    row = await owned_device(server, who, device_id)
    await server.db.write(lambda conn: store.revoke_device_key(conn, device_id))
    server.forget_key(row["key_hash"])
    revoked = await store.device_row(server.db, device_id)
    if revoked is not None:
        server.hub.device_changed(store.device_out(revoked, time.time()), revoked["user_id"])
    return api.Done(detail="device key revoked")


handlers = [list_devices, device_detail, delete_device, revoke_device]
