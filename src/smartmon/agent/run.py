"""The agent loop: enroll, collect one report per interval, spool it, deliver oldest first.

Every report goes to the on-disk spool before it is sent and leaves it once the server has
it, so nothing collected is lost to an outage, a restart or kill -9; the server's reportId
dedupe turns at-least-once delivery into exactly once. SIGINT/SIGTERM stop the loop at
once, interrupting a wait or an HTTP request; the report in flight stays in the spool.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TextIO

import msgspec

from smartmon import wire
from smartmon.agent.collect import Collector, CollectorError, CollectorKind, open_collector
from smartmon.agent.delivery import Backoff, Delivery, post_compressed
from smartmon.agent.enroll import DeviceKeys, StoredDevice, enroll, server_slug
from smartmon.agent.report import agent_info, build_report, compress
from smartmon.agent.sender import BadAnswer, Refused, Sender, Unreachable
from smartmon.agent.spool import Spool, SpoolBusy
from smartmon.exit_codes import CommandError, ExitCode

QUIET, NORMAL, VERBOSE = -1, 0, 1
ONCE_ATTEMPTS = 3
ONCE_BACKOFF_CAP_S = 4.0


@dataclass(frozen=True)
class AgentSettings:
    """Everything one agent run needs, resolved from flags and environment."""

    server: str
    device_name: str
    state_dir: Path
    token: str | None = None
    interval_s: float = 10.0
    once: bool = False
    dry_run: bool = False
    spool_max_bytes: int = 64 * 1024 * 1024
    collector: CollectorKind = "auto"
    verbosity: int = NORMAL


class AgentExit(CommandError):
    """The agent stops with a documented exit code and one line saying why."""


class _Stopped(BaseException):
    """Raised by the signal handler to cut a wait or a request short."""


class Agent:
    """One agent run against one server; `run()` returns normally or raises AgentExit."""

    def __init__(
        self,
        settings: AgentSettings,
        *,
        sender: Sender | None = None,
        collector: Collector | None = None,
        log: TextIO | None = None,
        out: TextIO | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self._sender = sender
        self._collector = collector
        self._log = log or sys.stderr
        self._out = out or sys.stdout
        self._keys = DeviceKeys(settings.state_dir)
        self._device: StoredDevice | None = None
        once_cap = ONCE_BACKOFF_CAP_S if settings.once else None
        self._backoff = backoff or (Backoff(cap=once_cap) if once_cap else Backoff())
        self._stopping = False
        self._interruptible = False
        self._next_send = 0.0
        self._last_problem = ""
        self._last_status: int | None = None
        self._sent = 0
        self._collected_closed = 0

    # ---- entry points -------------------------------------------------------------------

    def run(self) -> None:
        """Run until stopped (or one report with --once); AgentExit carries failures."""
        if self.settings.dry_run:
            self._dry_run()
            return
        self._device = self._stored_device()
        with ExitStack() as cleanup:
            spool = self._open_spool()
            cleanup.callback(spool.close)
            collector = self._open_collector(close_events=not self.settings.once)
            if self._collector is None:
                cleanup.callback(collector.close)
            sender = self._sender or Sender(self.settings.server)
            if self._sender is None:
                cleanup.callback(sender.close)
            cleanup.callback(self._restore_signal_handlers, self._install_signal_handlers())
            try:
                if self.settings.once:
                    self._run_once(collector, sender, spool)
                else:
                    self._run_forever(collector, sender, spool)
            except _Stopped:
                pass
        if self._stopping:
            self._say(f"stopped; {len(spool)} report(s) kept in the spool", NORMAL)

    def _dry_run(self) -> None:
        collector = self._open_collector(close_events=False)
        try:
            report = build_report(collector, seq=0, interval_s=self.settings.interval_s)
        finally:
            if self._collector is None:
                collector.close()
        self._out.write(msgspec.json.format(wire.encode(report), indent=2).decode() + "\n")
        self._out.flush()

    # ---- the loops ----------------------------------------------------------------------

    def _run_forever(self, collector: Collector, sender: Sender, spool: Spool) -> None:
        interval = self.settings.interval_s
        info = agent_info(collector)
        self._say(
            f"reporting to {self.settings.server} as {self.settings.device_name!r} every "
            f"{interval:g} s ({info.capabilities.collector} collector)",
            NORMAL,
        )
        next_collect = time.monotonic()
        while not self._stopping:
            now = time.monotonic()
            if now >= next_collect:
                collected = self._collect_into_spool(collector, spool, info)
                # After a stall (suspend, slow disk) start afresh rather than catch up.
                next_collect = max(next_collect + interval, now + interval / 2)
                if now >= self._next_send:
                    self._drain(sender, spool, until=next_collect)
                self._report_cycle(collected, spool)
            elif len(spool) and now >= self._next_send:
                self._drain(sender, spool, until=next_collect)
            wake = next_collect
            if len(spool):
                wake = min(wake, max(self._next_send, time.monotonic()))
            self._wait(wake - time.monotonic())

    def _run_once(self, collector: Collector, sender: Sender, spool: Spool) -> None:
        self._collect_into_spool(collector, spool, agent_info(collector))
        for attempt in range(1, ONCE_ATTEMPTS + 1):
            self._drain(sender, spool, until=float("inf"))
            if not len(spool):
                self._say(f"sent {self._sent} report(s) to {self.settings.server}", NORMAL)
                return
            if attempt < ONCE_ATTEMPTS:
                self._wait(self._next_send - time.monotonic())
        code = ExitCode.UNREACHABLE if self._last_status is None else ExitCode.ERROR
        raise AgentExit(
            code,
            f"could not deliver to {self.settings.server} after {ONCE_ATTEMPTS} attempts: "
            f"{self._last_problem}; {len(spool)} report(s) kept in the spool",
        )

    # ---- collect ------------------------------------------------------------------------

    def _collect_into_spool(self, collector: Collector, spool: Spool, info: wire.AgentInfo) -> int:
        report = build_report(
            collector,
            seq=spool.next_seq(),
            interval_s=self.settings.interval_s,
            dropped_reports=spool.dropped,
            agent=info,
        )
        body = compress(report)
        dropped = spool.put(report.seq, body)
        if dropped:
            self._say(
                f"spool full ({self.settings.spool_max_bytes} bytes): dropped the "
                f"{dropped} oldest report(s)",
                VERBOSE,
            )
        self._collected_closed = len(report.closed)
        return len(report.connections)

    # ---- deliver ------------------------------------------------------------------------

    def _drain(self, sender: Sender, spool: Spool, *, until: float) -> None:
        """Send spooled reports oldest first until empty, a failure, or `until`."""
        enrolled_now = False
        while (entry := spool.oldest()) is not None:
            device = self._device
            if device is None:
                device = self._enroll(sender)
                if device is None:
                    return
                enrolled_now = True
            with self._interruptible_section():
                delivery = post_compressed(sender, device.device_key, entry.read())
            if delivery.verdict == "sent":
                spool.remove(entry)
                self._sent += 1
                self._backoff.reset()
                self._last_problem = ""
                self._last_status = None
            elif delivery.verdict == "retry":
                self._retry_later(delivery)
                return
            elif delivery.verdict == "auth":
                self._key_rejected(delivery, enrolled_now)
            else:
                spool.reject(entry)
                self._say(
                    f"the server refused report {entry.seq} for good "
                    f"({delivery.reason}); dropped it",
                    NORMAL,
                )
            if time.monotonic() >= until:
                return

    def _retry_later(self, delivery: Delivery) -> None:
        delay = self._backoff.next_delay(delivery.retry_after)
        self._next_send = time.monotonic() + delay
        self._last_status = delivery.status
        what = "server unreachable" if delivery.status is None else "server busy"
        self._last_problem = f"{what}: {delivery.reason}"
        self._say(f"{self._last_problem}; next try in {delay:.1f} s", VERBOSE)

    def _key_rejected(self, delivery: Delivery, enrolled_now: bool) -> None:
        server = self.settings.server
        if self.settings.token is None:
            raise AgentExit(
                ExitCode.AUTH,
                f"{server} rejected this device's key ({delivery.reason}): the device was "
                "revoked or deleted; run the agent with --token to enroll it again",
            )
        if enrolled_now:
            raise AgentExit(
                ExitCode.AUTH, f"{server} rejected the key it has just issued ({delivery.reason})"
            )
        self._say(f"{server} rejected the device key ({delivery.reason}); enrolling again", NORMAL)
        self._keys.forget(server)
        self._device = None

    def _enroll(self, sender: Sender) -> StoredDevice | None:
        token = self.settings.token
        assert token is not None  # _stored_device() exits when there is neither key nor token
        try:
            with self._interruptible_section():
                device = enroll(sender, token, self.settings.device_name)
        except Unreachable as exc:
            self._retry_later(Delivery("retry", exc.reason))
            return None
        except Refused as exc:
            if exc.status in (401, 403):
                raise AgentExit(
                    ExitCode.AUTH,
                    f"{self.settings.server} rejected the enrollment token "
                    f"({exc.status} {exc.detail})",
                ) from None
            if exc.status == 429 or exc.status >= 500:
                self._retry_later(
                    Delivery(
                        "retry",
                        f"{exc.status} {exc.detail}",
                        retry_after=exc.retry_after,
                        status=exc.status,
                    )
                )
                return None
            raise AgentExit(
                ExitCode.REJECTED,
                f"{self.settings.server} refused to enroll this device: {exc.detail}",
            ) from None
        except BadAnswer as exc:
            raise AgentExit(ExitCode.ERROR, str(exc)) from None
        path = self._keys.save(device)
        self._device = device
        self._say(
            f"enrolled as {device.device_name!r} (device {device.device_id}); key in {path}", NORMAL
        )
        return device

    # ---- setup --------------------------------------------------------------------------

    def _stored_device(self) -> StoredDevice | None:
        settings = self.settings
        device = self._keys.load(settings.server)
        if device is None and settings.token is None:
            raise AgentExit(
                ExitCode.AUTH,
                f"this device is not enrolled with {settings.server}: pass --token "
                "(or set MONITOR_AUTH_TOKEN) once to enroll it",
            )
        renamed = device is not None and device.device_name != settings.device_name
        if renamed and settings.token is not None:
            # A new name with a token means a new enrollment under that name.
            return None
        return device

    def _open_spool(self) -> Spool:
        directory = self.settings.state_dir / "spool" / server_slug(self.settings.server)
        try:
            return Spool(directory, self.settings.spool_max_bytes, exclusive=True)
        except SpoolBusy as exc:
            raise AgentExit(ExitCode.CONFIG, str(exc)) from None
        except OSError as exc:
            raise AgentExit(
                ExitCode.CONFIG, f"cannot use the spool in {directory}: {exc}"
            ) from None

    def _open_collector(self, *, close_events: bool) -> Collector:
        if self._collector is not None:
            return self._collector
        try:
            return open_collector(self.settings.collector, close_events=close_events)
        except CollectorError as exc:
            raise AgentExit(ExitCode.CONFIG, str(exc)) from None

    # ---- signals and waiting ------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, object]:
        previous: dict[int, object] = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[signum] = signal.signal(signum, self._on_signal)
            except ValueError:
                # Not the main thread (an embedding application): it handles signals itself.
                break
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, object]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        if self._interruptible:
            raise _Stopped

    @contextmanager
    def _interruptible_section(self) -> Iterator[None]:
        if self._stopping:
            raise _Stopped
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            with self._interruptible_section():
                time.sleep(seconds)

    def stop(self) -> None:
        """Ask the loop to stop after the current step (for embedding and tests)."""
        self._stopping = True

    # ---- output -------------------------------------------------------------------------

    def _report_cycle(self, collected: int, spool: Spool) -> None:
        line = (
            f"{datetime.now().strftime('%H:%M:%S')} collected {collected} connections "
            f"({self._collected_closed} closed), sent {self._sent}, spooled {len(spool)}, "
            f"dropped {spool.dropped_since_start}"
        )
        if self._last_problem:
            line += f" - {self._last_problem}"
        self._sent = 0
        self._say(line, NORMAL)

    def _say(self, line: str, level: int) -> None:
        if self.settings.verbosity >= level:
            print(line, file=self._log, flush=True)
