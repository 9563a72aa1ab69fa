"""The fleet: many DeviceModels enrolling and reporting like real agents.

`Fleet` drives the models over one shared httpx connection pool on asyncio: it enrolls each
device with its own key, fires each device on its own jittered schedule, honours 429
Retry-After, backs off while the server is away and re-enrolls a device whose key stopped
working. Nothing is ever sent anywhere but the smartmon server.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import httpx

from smartmon import __version__, wire
from smartmon.client import ApiError, AsyncClient, ServerUnreachable
from smartmon.exit_codes import CommandError, ExitCode
from smartmon.simulate.model import DEFAULT_PROFILE, DeviceModel, Profile

BACKOFF_FIRST_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_MAX_S = 600.0
ENROLL_CONCURRENCY = 16


# ---- the fleet ------------------------------------------------------------------------------


class FleetError(CommandError):
    """The fleet cannot go on: a documented exit code and one line saying why."""


@dataclass(frozen=True)
class FleetStatus:
    """A snapshot of the fleet, for the status line."""

    devices: int
    enrolled: int
    online: int
    reports_sent: int
    errors: int
    rate_limited: int
    last_error: str | None
    reached_server: bool = False

    def line(self) -> str:
        """One status line."""
        text = (
            f"{self.online}/{self.devices} devices online ({self.enrolled} enrolled), "
            f"{self.reports_sent} reports sent, {self.errors} errors"
        )
        if self.rate_limited:
            text += f", {self.rate_limited} rate-limited"
        if self.last_error:
            text += f"; last: {self.last_error}"
        return text


@dataclass
class SimDevice:
    """A model plus what the fleet knows of its enrollment and delivery."""

    model: DeviceModel
    start_offset_s: float
    timing: random.Random
    device_id: int | None = None
    key: str | None = None
    dropped: int = 0  # reports that never got through, carried as droppedReports
    failures: int = 0  # consecutive failed attempts (backoff)
    sent: int = 0
    retry_at: float = 0.0  # loop time before which reports are not attempted

    @property
    def name(self) -> str:
        return self.model.name


ReportHook = Callable[[SimDevice, wire.Report], None]
StatusHook = Callable[[FleetStatus], None]


@dataclass
class _Counts:
    reports_sent: int = 0
    errors: int = 0
    rate_limited: int = 0
    last_error: str | None = None
    new_errors: bool = False
    reached_server: bool = False  # any HTTP answer at all


class Fleet:
    """Many simulated devices reporting to one server over one connection pool.

    `await fleet.run(duration_s)` enrolls and drives every device until `stop()` (safe from
    any thread), the duration, or a FleetError (the token was refused). `token` is an
    enrollment or access token; with `access_token` instead, the fleet first creates an
    enrollment token with it.
    """

    def __init__(
        self,
        server: str,
        devices: int,
        *,
        token: str | None = None,
        access_token: str | None = None,
        interval_s: float = 10.0,
        seed: int = 0,
        profile: Profile = DEFAULT_PROFILE,
        name_prefix: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
        on_report: ReportHook | None = None,
        on_status: StatusHook | None = None,
        backoff_cap_s: float = BACKOFF_CAP_S,
    ) -> None:
        if (token is None) == (access_token is None):
            raise ValueError("give exactly one of token and access_token")
        self.server = server
        self.token = token
        self.access_token = access_token
        self.interval_s = interval_s
        self.seed = seed
        self.transport = transport
        self.on_report = on_report
        self.on_status = on_status
        self.backoff_cap_s = backoff_cap_s
        self.devices: list[SimDevice] = []
        for index in range(1, devices + 1):
            model = DeviceModel(
                index, seed=seed, interval_s=interval_s, profile=profile, name_prefix=name_prefix
            )
            timing = random.Random(f"smartmon-sim-timing:{seed}:{index}")
            self.devices.append(SimDevice(model, timing.uniform(0, interval_s), timing))
        self._counts = _Counts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_requested = False
        self._fatal: FleetError | None = None
        self._enroll_gate = asyncio.Semaphore(ENROLL_CONCURRENCY)
        self._enrollment_token: str | None = token
        self._token_lock = asyncio.Lock()

    # ---- control ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the fleet to stop (from any thread, or a signal handler)."""
        self._stop_requested = True
        loop, event = self._loop, self._stop
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    def status(self) -> FleetStatus:
        """Devices online, reports sent, errors so far."""
        enrolled = sum(1 for d in self.devices if d.key is not None)
        online = sum(1 for d in self.devices if d.key is not None and d.model.online)
        c = self._counts
        return FleetStatus(
            len(self.devices),
            enrolled,
            online,
            c.reports_sent,
            c.errors,
            c.rate_limited,
            c.last_error,
            c.reached_server,
        )

    async def run(self, duration_s: float | None = None) -> FleetStatus:
        """Enroll and drive every device until stopped; raises FleetError if refused."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stop_requested:
            self._stop.set()
        limits = httpx.Limits(
            max_connections=min(100, max(4, len(self.devices))), max_keepalive_connections=100
        )
        client = AsyncClient(self.server, transport=self.transport, limits=limits)
        tasks = [asyncio.create_task(self._drive(client, d)) for d in self.devices]
        for task in tasks:
            task.add_done_callback(self._task_done)
        tasks.append(asyncio.create_task(self._report_status()))
        try:
            stopper = asyncio.create_task(self._stop.wait())
            await asyncio.wait([stopper], timeout=duration_s)
            stopper.cancel()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.aclose()
        if self._fatal is not None:
            raise self._fatal
        return self.status()

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and not isinstance(exc, FleetError):  # a bug: stop, say what
            self._fail(FleetError(ExitCode.ERROR, f"the simulator failed: {exc!r}"))

    def _fail(self, error: FleetError) -> None:
        if self._fatal is None:
            self._fatal = error
        assert self._stop is not None
        self._stop.set()

    def _error(self, message: str) -> None:
        self._counts.errors += 1
        self._counts.last_error = message
        self._counts.new_errors = True

    async def _report_status(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self.on_status is not None:
                self.on_status(self.status())
            if not self._counts.new_errors:
                self._counts.last_error = None
            self._counts.new_errors = False

    async def _wait(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _backoff(self, device: SimDevice) -> float:
        device.failures += 1
        ceiling = min(self.backoff_cap_s, BACKOFF_FIRST_S * 2.0 ** min(device.failures - 1, 16))
        return ceiling * device.timing.uniform(0.5, 1.0)

    # ---- enrollment -------------------------------------------------------------------------

    async def _token(self, client: AsyncClient) -> str:
        """The enrollment token, created once with the access token if need be."""
        async with self._token_lock:
            while self._enrollment_token is None:
                assert self.access_token is not None
                try:
                    created = await client.send(
                        AsyncClient.create_token(self.access_token, "smartmon simulate", 1.0)
                    )
                    self._enrollment_token = str(created["token"])
                    self._counts.reached_server = True
                except ServerUnreachable as exc:
                    self._error(f"server unreachable: {exc.reason}")
                    await asyncio.sleep(min(self.backoff_cap_s, 2.0))
                except ApiError as exc:
                    self._counts.reached_server = True
                    self._refused(exc, "creating an enrollment token")
            return self._enrollment_token

    def _refused(self, exc: ApiError, doing: str) -> NoReturn:
        code = ExitCode.AUTH if exc.status in (401, 403) else ExitCode.REJECTED
        error = FleetError(code, f"{doing} was refused: {exc.detail} ({exc.status})")
        self._fail(error)
        raise error

    async def _enroll(self, client: AsyncClient, device: SimDevice) -> None:
        """Enroll (or re-enroll) a device; retries until the server answers."""
        registration = wire.DeviceRegistration(
            device_name=device.name,
            hostname=device.name,
            os="linux",
            agent_version=f"{__version__}+sim",
        )
        while True:
            token = await self._token(client)
            try:
                async with self._enroll_gate:
                    answer = await client.send(AsyncClient.register_device(token, registration))
            except ServerUnreachable as exc:
                self._error(f"server unreachable: {exc.reason}")
                await self._wait(self._backoff(device))
                continue
            except ApiError as exc:
                self._counts.reached_server = True
                if exc.status == 429 or exc.status >= 500:
                    self._counts.rate_limited += exc.status == 429
                    self._error(f"enrolling {device.name}: {exc.detail} ({exc.status})")
                    await self._wait(self._retry_delay(device, exc))
                    continue
                self._refused(exc, f"enrolling {device.name}")
            self._counts.reached_server = True
            device.device_id = int(answer["deviceId"])
            device.key = str(answer["deviceKey"])
            device.failures = 0
            return

    def _retry_delay(self, device: SimDevice, exc: ApiError) -> float:
        if exc.retry_after is not None:
            device.failures += 1
            return min(float(exc.retry_after), RETRY_AFTER_MAX_S)
        return self._backoff(device)

    # ---- reporting --------------------------------------------------------------------------

    async def _drive(self, client: AsyncClient, device: SimDevice) -> None:
        loop = asyncio.get_running_loop()
        await self._wait(device.start_offset_s * 0.25)  # spread the enrollments a little
        await self._enroll(client, device)
        next_tick = loop.time() + device.start_offset_s * 0.75
        while True:
            await self._wait(next_tick - loop.time())
            next_tick += self.interval_s
            if next_tick < loop.time():  # fell behind (a long retry): skip, don't burst
                next_tick = loop.time() + self.interval_s
            report = device.model.tick()
            if report is None:
                continue
            report.dropped_reports = device.dropped
            if self.on_report is not None:
                self.on_report(device, report)
            if loop.time() < device.retry_at:  # still backing off: this one is lost
                device.dropped += 1
                continue
            if not await self._deliver(client, device, report, deadline=next_tick):
                device.dropped += 1

    async def _deliver(
        self, client: AsyncClient, device: SimDevice, report: wire.Report, deadline: float
    ) -> bool:
        """Send one report, retrying while the next one is not yet due."""
        loop = asyncio.get_running_loop()
        reenrolled = False
        while True:
            assert device.key is not None
            try:
                await client.post_report(device.key, report)
            except ServerUnreachable as exc:
                self._error(f"server unreachable: {exc.reason}")
                delay = self._backoff(device)
            except ApiError as exc:
                self._counts.reached_server = True
                if exc.status in (401, 403) and not reenrolled:
                    reenrolled = True  # the key was revoked or the server forgot it
                    self._error(f"{device.name}: {exc.detail}; enrolling again")
                    await self._enroll(client, device)
                    continue
                if exc.status != 429 and exc.status < 500:
                    self._error(f"{device.name}: report refused: {exc.detail} ({exc.status})")
                    return False
                self._counts.rate_limited += exc.status == 429
                self._error(f"{device.name}: {exc.detail} ({exc.status})")
                delay = self._retry_delay(device, exc)
            else:
                self._counts.reached_server = True
                device.failures = 0
                device.sent += 1
                self._counts.reports_sent += 1
                return True
            device.retry_at = loop.time() + delay
            if device.retry_at >= deadline:
                return False
            await self._wait(delay)
