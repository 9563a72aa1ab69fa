"""A poll becomes a Report, and a Report becomes the gzip'd JSON that is spooled and sent."""

from __future__ import annotations

import uuid
import zlib
from datetime import UTC, datetime

import msgspec

from smartmon import __version__, wire
from smartmon.agent.collect import Collector, interface_totals
from smartmon.agent.enroll import agent_identity

GZIP_LEVEL = 6
_GZIP_WBITS = 31  # zlib's gzip container
_ENCODE_SLICE = 500
_ENCODER = msgspec.json.Encoder()
_EMPTY_LISTS = b',"connections":[],"closed":[],'


def build_report(
    collector: Collector,
    *,
    seq: int,
    interval_s: float,
    dropped_reports: int = 0,
    agent: wire.AgentInfo | None = None,
) -> wire.Report:
    """Poll the collector once and wrap the result in a Report with a fresh reportId."""
    connections, closed = collector.poll()
    limit = wire.MAX_CONNECTIONS_PER_REPORT
    if len(connections) > limit or len(closed) > limit:
        connections, closed = connections[:limit], closed[:limit]
    return wire.Report(
        report_id=str(uuid.uuid4()),
        seq=seq,
        collected_at=datetime.now(UTC),
        interval_s=interval_s,
        agent=agent or agent_info(collector),
        interfaces=interface_totals(),
        connections=connections,
        closed=closed,
        dropped_reports=dropped_reports,
    )


def agent_info(collector: Collector) -> wire.AgentInfo:
    """Who this agent is and what its collector can see."""
    hostname, system = agent_identity()
    return wire.AgentInfo(
        version=__version__, os=system, hostname=hostname, capabilities=collector.capabilities
    )


def compress(report: wire.Report) -> bytes:
    """The report as gzip-compressed JSON, as it is spooled and sent.

    Byte for byte `gzip(wire.encode(report))`, but the connection lists are encoded a slice
    at a time into one reused buffer: the whole JSON (about 250 bytes a connection) is never
    in memory at once, which matters on small devices with many sockets.
    """
    shell = msgspec.structs.replace(report, connections=[], closed=[])
    head = wire.encode(shell)
    prefix, suffix = head.split(_EMPTY_LISTS, 1)
    gzipper = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    parts = [gzipper.compress(prefix), gzipper.compress(b',"connections":[')]
    buffer = bytearray()
    for name, connections in ((b"", report.connections), (b'],"closed":[', report.closed)):
        if name:
            parts.append(gzipper.compress(name))
        for start in range(0, len(connections), _ENCODE_SLICE):
            _ENCODER.encode_into(connections[start : start + _ENCODE_SLICE], buffer)
            if start:
                parts.append(gzipper.compress(b","))
            parts.append(gzipper.compress(memoryview(buffer)[1:-1]))
    parts.append(gzipper.compress(b"],"))
    parts.append(gzipper.compress(suffix))
    parts.append(gzipper.flush())
    return b"".join(parts)
