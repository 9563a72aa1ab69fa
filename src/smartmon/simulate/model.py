"""One simulated device: its sockets and counters, advanced one report at a time.

`DeviceModel` is pure: each device draws from its own seeded random stream, so the same seed
gives the same names, the same connections and the same counter sequence whatever the
server or the clock does. Every remote address is in a documentation range (RFC 5737,
RFC 3849).
"""

from __future__ import annotations

import ipaddress
import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from smartmon import __version__, wire

Kind = Literal["meter", "gateway"]

HEAD_ENDS = ("203.0.113.10", "203.0.113.11", "203.0.113.12")
MQTT_BROKERS = ("198.51.100.20", "198.51.100.21")
GATEWAY_UPLINKS_V6 = ("2001:db8:ffff::10", "2001:db8:ffff::11")
NTP_SERVERS = ("192.0.2.123", "192.0.2.124")
RESOLVERS = ("192.0.2.53", "192.0.2.54")
FIRMWARE_HOST = "198.51.100.80"
SYSLOG_HOST = "192.0.2.14"
# where "new destinations" come from: the three IPv4 documentation ranges and 2001:db8::/32
NEW_DESTINATION_NETS = tuple(
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
EPHEMERAL_PORTS = (32768, 60999)
CAPABILITIES = wire.Capabilities(
    collector="netlink", counters=True, processes="all", close_events=True
)


@dataclass(frozen=True)
class Profile:
    """How a simulated fleet behaves; times are seconds, so any interval looks alike."""

    gateway_every: int = 10  # device i is a gateway when i % gateway_every == 3
    mean_uptime_s: float = 1800.0  # between outages of one device
    outage_s: tuple[float, float] = (45.0, 240.0)  # how long an outage lasts
    firmware_check_s: tuple[float, float] = (120.0, 900.0)  # between firmware checks
    new_destination_s: float = 600.0  # mean time between new destinations of one device
    gateway_field_devices: tuple[int, int] = (40, 120)  # inbound connections of a gateway


DEFAULT_PROFILE = Profile()


def device_name(index: int, profile: Profile = DEFAULT_PROFILE, prefix: str = "") -> str:
    """`meter-0001` or `gw-0003`: the name depends only on the index, so reruns reuse devices."""
    return f"{prefix}{'gw' if _is_gateway(index, profile) else 'meter'}-{index:04d}"


def _is_gateway(index: int, profile: Profile) -> bool:
    every = max(1, profile.gateway_every)
    return every > 1 and index % every == 3 % every


@dataclass
class _Flow:
    """One socket of a simulated device and its counters."""

    protocol: wire.Protocol
    source_ip: str
    source_port: int
    dest_ip: str
    dest_port: int
    state: str
    pid: int
    process: str
    rate_in: float = 0.0  # bytes per second, on average
    rate_out: float = 0.0
    counters: list[int] | None = None  # bytes in/out, packets in/out (None: UDP, unknown)
    ttl: int | None = None  # reports left before it closes (None: until an outage)
    session: bool = False  # a long-lived session that an outage breaks

    @property
    def key(self) -> tuple[str, str, int, str, int]:
        return (self.protocol, self.source_ip, self.source_port, self.dest_ip, self.dest_port)

    def connection(self, state: str | None = None) -> wire.Connection:
        c: list[int] | list[None] = self.counters or [None, None, None, None]
        return wire.Connection(
            self.protocol,
            self.source_ip,
            self.source_port,
            self.dest_ip,
            self.dest_port,
            state or self.state,
            pid=self.pid,
            process=self.process,
            bytes_in=c[0],
            bytes_out=c[1],
            packets_in=c[2],
            packets_out=c[3],
        )


class DeviceModel:
    """One simulated device: its sockets and counters, one report at a time."""

    def __init__(
        self,
        index: int,
        *,
        seed: int,
        interval_s: float,
        profile: Profile = DEFAULT_PROFILE,
        name_prefix: str = "",
    ) -> None:
        self.index = index
        self.interval_s = interval_s
        self.profile = profile
        self.kind: Kind = "gateway" if _is_gateway(index, profile) else "meter"
        self.name = device_name(index, profile, name_prefix)
        self.rng = random.Random(f"smartmon-sim:{seed}:{index}")
        self.seq = 0
        self.offline_for = 0  # reports still to skip in the current outage
        self.outages = 0
        rng = self.rng
        self.address = f"10.{20 + index // 65536 % 200}.{index // 256 % 256}.{index % 256}"
        self.address6 = f"2001:db8:10::{index:x}"
        self.interfaces = [rng.randrange(0, 1 << 20), rng.randrange(0, 1 << 20), 0, 0]
        self.interfaces[2], self.interfaces[3] = (
            self.interfaces[0] // 700,
            self.interfaces[1] // 300,
        )
        self.flows: dict[tuple[str, str, int, str, int], _Flow] = {}
        self.closed: list[wire.Connection] = []
        self.next_firmware_check = self._ticks(rng.uniform(0, profile.firmware_check_s[1]))
        if self.kind == "gateway":
            self._build_gateway()
        else:
            self._build_meter()

    # ---- building ---------------------------------------------------------------------------

    def _ticks(self, seconds: float) -> int:
        return max(1, math.ceil(seconds / self.interval_s))

    def _chance(self, mean_s: float) -> bool:
        """True about once per mean_s seconds."""
        return mean_s > 0 and self.rng.random() < min(1.0, self.interval_s / mean_s)

    def _port(self) -> int:
        taken = {f.source_port for f in self.flows.values()}
        while True:
            port = self.rng.randint(*EPHEMERAL_PORTS)
            if port not in taken:
                return port

    def _pid(self) -> int:
        return self.rng.randrange(300, 32768)

    def _add(self, flow: _Flow) -> _Flow:
        if flow.protocol == "TCP" and flow.counters is None:
            flow.counters = [0, 0, 0, 0]
        self.flows[flow.key] = flow
        return flow

    def _listen(
        self, port: int, process: str, protocol: wire.Protocol = "TCP", v6: bool = False
    ) -> None:
        any_ip = "::" if v6 else "0.0.0.0"
        state = "LISTEN" if protocol == "TCP" else "UNCONN"
        self._add(_Flow(protocol, any_ip, port, any_ip, 0, state, self._pid(), process))

    def _tcp_session(
        self,
        dest: str,
        port: int,
        process: str,
        rate_in: float,
        rate_out: float,
        ttl: int | None = None,
        *,
        v6: bool = False,
        pid: int | None = None,
    ) -> _Flow:
        source = self.address6 if v6 else self.address
        return self._add(
            _Flow(
                "TCP",
                source,
                self._port(),
                dest,
                port,
                "ESTABLISHED",
                pid or self._pid(),
                process,
                rate_in,
                rate_out,
                ttl=ttl,
                session=ttl is None,
            )
        )

    def _udp(self, dest: str, port: int, process: str, ttl: int | None = None) -> _Flow:
        return self._add(
            _Flow(
                "UDP",
                self.address,
                self._port(),
                dest,
                port,
                "ESTABLISHED",
                self._pid(),
                process,
                ttl=ttl,
                session=ttl is None,
            )
        )

    def _build_meter(self) -> None:
        rng = self.rng
        self._listen(8443, "meter-admin")
        if rng.random() < 0.3:
            self._listen(22, "dropbear")
        self._add(_Flow("UDP", "127.0.0.1", 53, "0.0.0.0", 0, "UNCONN", self._pid(), "dnsmasq"))
        head_end = rng.random()
        if head_end < 0.65:
            self._tcp_session(rng.choice(HEAD_ENDS), 443, "meterd", 12.0, 45.0)
        if head_end > 0.35:  # MQTT telemetry, alone or beside the head-end session
            self._tcp_session(rng.choice(MQTT_BROKERS), 8883, "mqtt-client", 8.0, 30.0)
        self._udp(rng.choice(NTP_SERVERS), 123, "chronyd")

    def _build_gateway(self) -> None:
        rng = self.rng
        for port, process in (
            (22, "dropbear"),
            (443, "gw-admin"),
            (1883, "mosquitto"),
            (8883, "mosquitto"),
        ):
            self._listen(port, process)
        self._listen(443, "gw-admin", v6=True)
        self._listen(161, "snmpd", "UDP")
        self._listen(5353, "avahi-daemon", "UDP")
        broker = self._pid()
        for i in range(rng.randint(*self.profile.gateway_field_devices)):
            self._field_device(broker, i)
        uplink = self._pid()
        for _ in range(rng.randint(2, 4)):
            self._tcp_session(rng.choice(HEAD_ENDS), 443, "gw-uplink", 300.0, 2500.0, pid=uplink)
        self._tcp_session(rng.choice(MQTT_BROKERS), 8883, "mosquitto", 200.0, 1500.0, pid=broker)
        self._tcp_session(rng.choice(GATEWAY_UPLINKS_V6), 443, "gw-uplink", 100.0, 800.0, v6=True)
        self._udp(rng.choice(NTP_SERVERS), 123, "chronyd")
        self._udp(SYSLOG_HOST, 514, "syslogd")

    def _field_device(self, broker_pid: int, n: int) -> None:
        """An inbound MQTT connection from a field device on the gateway's local broker."""
        peer = f"198.51.100.{100 + (n * 7 + self.rng.randrange(0, 7)) % 150}"
        flow = _Flow(
            "TCP",
            self.address,
            1883,
            peer,
            self.rng.randint(*EPHEMERAL_PORTS),
            "ESTABLISHED",
            broker_pid,
            "mosquitto",
            rate_in=self.rng.uniform(5.0, 60.0),
            rate_out=self.rng.uniform(1.0, 10.0),
            session=True,
        )
        if flow.key not in self.flows:
            self._add(flow)

    # ---- advancing --------------------------------------------------------------------------

    def tick(self, collected_at: datetime | None = None) -> wire.Report | None:
        """The device's next report, or None while it is offline (it then sends nothing)."""
        if self.offline_for > 0:
            self.offline_for -= 1
            if self.offline_for == 0:
                self._reconnect()
            return None
        if self._chance(self.profile.mean_uptime_s):
            self.offline_for = self._ticks(self.rng.uniform(*self.profile.outage_s))
            self.outages += 1
            return None
        self._expire()
        self._maybe_check_firmware()
        self._maybe_new_destination()
        if self.kind == "gateway":
            self._churn_field_devices()
        self._grow()
        self.seq += 1
        closed, self.closed = self.closed, []
        return wire.Report(
            report_id=str(uuid.uuid4()),  # unique per run even with a seed: reruns aren't dupes
            seq=self.seq,
            collected_at=collected_at or datetime.now(UTC),
            interval_s=self.interval_s,
            agent=wire.AgentInfo(
                version=f"{__version__}+sim",
                os="linux",
                hostname=self.name,
                capabilities=CAPABILITIES,
            ),
            interfaces=wire.InterfaceTotals(*self.interfaces),
            connections=[f.connection() for f in self.flows.values()],
            closed=closed,
        )

    @property
    def online(self) -> bool:
        """Not in an outage."""
        return self.offline_for == 0

    def _close(self, flow: _Flow) -> None:
        del self.flows[flow.key]
        self.closed.append(flow.connection("CLOSE" if flow.protocol == "TCP" else None))

    def _reconnect(self) -> None:
        """Back from an outage: the sessions it held broke and are opened again."""
        # inbound field-device connections (local port 1883) are left to the field devices
        for flow in [f for f in self.flows.values() if f.session and f.source_port != 1883]:
            self._close(flow)
            renewed = _Flow(
                flow.protocol,
                flow.source_ip,
                self._port(),
                flow.dest_ip,
                flow.dest_port,
                flow.state,
                flow.pid,
                flow.process,
                flow.rate_in,
                flow.rate_out,
                session=True,
            )
            self._add(renewed)
        self._udp(self.rng.choice(RESOLVERS), 53, "dnsmasq", ttl=0)  # looked the peers up again

    def _expire(self) -> None:
        for flow in list(self.flows.values()):
            if flow.ttl is not None:
                flow.ttl -= 1
                if flow.ttl < 0:
                    self._close(flow)

    def _maybe_check_firmware(self) -> None:
        """Now and then: a DNS lookup, then a short HTTPS request that closes next report."""
        self.next_firmware_check -= 1
        if self.next_firmware_check > 0:
            return
        self.next_firmware_check = self._ticks(self.rng.uniform(*self.profile.firmware_check_s))
        pid = self._pid()
        lookup = self._udp(self.rng.choice(RESOLVERS), 53, "fw-update", ttl=0)
        lookup.pid = pid
        check = self._tcp_session(FIRMWARE_HOST, 443, "fw-update", 0.0, 0.0, ttl=0, pid=pid)
        assert check.counters is not None
        check.counters[:] = [self.rng.randrange(4000, 24000), self.rng.randrange(600, 1500), 0, 0]
        check.counters[2], check.counters[3] = check.counters[0] // 1400 + 3, 5

    def _maybe_new_destination(self) -> None:
        if not self._chance(self.profile.new_destination_s):
            return
        rng = self.rng
        if self.kind == "gateway" and rng.random() < 0.3:
            dest = f"2001:db8:{rng.randrange(1, 0xFFFF):x}::{rng.randrange(1, 0xFFFF):x}"
            v6 = True
        else:
            net = rng.choice(NEW_DESTINATION_NETS)
            dest = str(net[rng.randrange(1, 255)])
            v6 = False
        ttl = self._ticks(rng.uniform(20, 300))
        port = rng.choice((443, 443, 443, 8883, 80))
        self._tcp_session(
            dest,
            port,
            "meterd" if self.kind == "meter" else "gw-uplink",
            rng.uniform(20, 400),
            rng.uniform(50, 2000),
            ttl,
            v6=v6,
        )

    def _churn_field_devices(self) -> None:
        inbound = [f for f in self.flows.values() if f.source_port == 1883 and f.state != "LISTEN"]
        if inbound and self.rng.random() < 0.3:
            self._close(self.rng.choice(inbound))
            broker = inbound[0].pid
            self._field_device(broker, self.rng.randrange(0, 1000))

    def _grow(self) -> None:
        totals = [0, 0, 0, 0]
        for flow in self.flows.values():
            rate_in, rate_out = flow.rate_in, flow.rate_out
            if flow.protocol == "UDP" and flow.state == "ESTABLISHED":
                rate_in = rate_out = 1.5  # NTP polls, syslog lines: counters unknown, bytes real
            if rate_in <= 0 and rate_out <= 0:
                continue
            moved_in = int(rate_in * self.interval_s * self.rng.uniform(0.3, 1.7))
            moved_out = int(rate_out * self.interval_s * self.rng.uniform(0.3, 1.7))
            delta = [moved_in, moved_out, moved_in // 500 + 1, moved_out // 700 + 1]
            if flow.counters is not None:
                flow.counters = [c + d for c, d in zip(flow.counters, delta, strict=True)]
            totals = [t + d for t, d in zip(totals, delta, strict=True)]
        background = int(self.interval_s * self.rng.uniform(20, 200))  # ARP, mDNS, DHCP
        totals = [totals[0] + background, totals[1] + background // 4, totals[2] + 2, totals[3] + 1]
        self.interfaces = [c + d for c, d in zip(self.interfaces, totals, strict=True)]
