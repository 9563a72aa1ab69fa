"""Agent benchmark: collect() beside `ss -tuna` and psutil, CPU per cycle, memory, churn capture.

Everything runs on loopback, side by side in one run (the machine is shared and noisy):
- wall time of `collect()` (netlink: sockets, TCP counters and owning processes) against
  `ss -tuna` run as a subprocess (sockets only), and psutil.net_connections, at 1,000 and
  10,000 established loopback connections (each is two sockets: both ends are local);
- CPU of one agent cycle (collect + encode + gzip) at 1,000 connections, as a share of one
  core over a 10 s interval, beside the CPU `ss -tuna` itself burns per run;
- resident memory of an agent process at 10,000 connections, beside a bare interpreter,
  and its growth over many cycles;
- short-lived TCP connections opened and closed at ~1,000 per second: the share the agent
  reports (destroy events) against polling psutil every second.

Run: python -m bench.agent_bench [--quick] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench.report import Figure, Section

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION_TITLE = "## Agent"
CYCLE_INTERVAL_S = 10.0
CHURN_PROCESSES = 2
CHURN_PAYLOAD = 100


@dataclass(frozen=True)
class Plan:
    """How big and how long."""

    sizes: tuple[int, ...]
    repeats: int
    cpu_size: int
    cpu_cycles: int
    rss_runs: tuple[tuple[int, int], ...]  # (connections, cycles)
    churn_rate: int
    churn_seconds: float

    @classmethod
    def full(cls) -> Plan:
        """The figures recorded in docs/benchmarks.md (a few minutes)."""
        # 5,000 loopback connections are the 10,000 sockets the memory target speaks of.
        return cls((1_000, 10_000), 11, 1_000, 100, ((5_000, 1_000), (10_000, 30)), 1_000, 10.0)

    @classmethod
    def quick(cls) -> Plan:
        """Small sizes, seconds: what the test suite runs so the benchmark never rots."""
        return cls((200,), 3, 200, 5, ((200, 20),), 200, 1.0)


@dataclass
class Results:
    """Every figure, named for the table."""

    lines: list[tuple[str, str, str, str]] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: str, baseline: str, ratio: str, **figures: float) -> None:
        """One table row plus the raw numbers behind it."""
        self.lines.append((name, value, baseline, ratio))
        self.figures.update(figures)
        print(f"{name:<58} {value:>14}  vs {baseline:<34} ratio {ratio}", flush=True)


# ---- helpers run in child processes ---------------------------------------------------


def raise_fd_limit() -> int:
    """Lift the soft open-file limit to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    # VmHWM, not getrusage's ru_maxrss: Linux carries the forking parent's peak over exec.
    with open("/proc/self/status", "rb") as status:
        for line in status:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def role_hold(count: int) -> None:
    """Child: accept `count` connections and hold them until stdin closes."""
    raise_fd_limit()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    print(listener.getsockname()[1], flush=True)
    held = [listener.accept()[0] for _ in range(count)]
    print("ready", flush=True)
    sys.stdin.read()
    for sock in held:
        sock.close()
    listener.close()


def role_churn(rate: float, seconds: float) -> None:
    """Child: open, use and close `rate` connections a second; print every client key."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    print(port, flush=True)
    sys.stdin.readline()  # the pollers are running
    keys: list[int] = []
    total = int(rate * seconds)
    start = time.monotonic()
    for number in range(total):
        pause = start + number / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        client.sendall(b"q" * CHURN_PAYLOAD)
        server.recv(CHURN_PAYLOAD)
        server.close()  # the server closes first: the client end leaves no TIME_WAIT behind
        client.recv(1)
        keys.append(client.getsockname()[1])
        client.close()
    elapsed = time.monotonic() - start
    listener.close()
    print(json.dumps({"port": port, "clientPorts": keys, "seconds": elapsed}), flush=True)


def role_agent_rss(cycles: int) -> None:
    """Child: what `smartmon agent` holds in memory, cycle after cycle; prints JSON."""
    before_imports = _rss_bytes()
    # What `smartmon agent` loads: the CLI, the command, the sender.
    import smartmon.agent.command
    import smartmon.agent.sender
    import smartmon.cli  # noqa: F401
    from smartmon.agent.collect import open_collector
    from smartmon.agent.report import agent_info, build_report, compress

    collector = open_collector("auto")
    info = agent_info(collector)
    samples: dict[int, int] = {}
    connections = 0
    for cycle in range(1, cycles + 1):
        report = build_report(collector, seq=cycle, interval_s=10, agent=info)
        compress(report)
        connections = len(report.connections)
        del report
        if cycle in (1, 10) or cycle % 100 == 0 or cycle == cycles:
            samples[cycle] = _rss_bytes()
    collector.close()
    peak = _peak_rss_bytes()
    print(
        json.dumps(
            {"bare": before_imports, "samples": samples, "peak": peak, "sockets": connections}
        )
    )


# ---- the parent ------------------------------------------------------------------------


def _child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.agent_bench", "--role", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


@contextmanager
def established(count: int) -> Iterator[list[socket.socket]]:
    """`count` established loopback connections: client ends here, server ends in a child."""
    holder = _child("hold", str(count))
    clients: list[socket.socket] = []
    try:
        assert holder.stdout is not None and holder.stdin is not None
        port = int(holder.stdout.readline())
        for _ in range(count):
            clients.append(socket.create_connection(("127.0.0.1", port)))
        if holder.stdout.readline().strip() != "ready":
            raise RuntimeError("the connection holder did not get every connection")
        yield clients
    finally:
        for sock in clients:
            # A reset, not a FIN: ten thousand TIME_WAIT sockets would skew what runs next.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(timeout=60)
        if holder.stdout is not None:
            holder.stdout.close()


def _median_wall(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _run_ss() -> bytes:
    return subprocess.run(["ss", "-tuna"], capture_output=True, check=True).stdout


def bench_collect(plan: Plan, results: Results) -> None:
    """collect() against `ss -tuna` and psutil at each size, medians, interleaved."""
    import psutil

    from smartmon.agent import collect

    for size in plan.sizes:
        with established(size):
            cold_start = time.perf_counter()
            sockets = len(collect())
            cold = time.perf_counter() - cold_start
            ours: list[float] = []
            theirs: list[float] = []
            for _ in range(plan.repeats):  # interleaved, so noise hits both alike
                ours.append(_median_wall(collect, 1))
                theirs.append(_median_wall(_run_ss, 1))
            ss_lines = len(_run_ss().splitlines()) - 1
            psutil_time = _median_wall(
                lambda: psutil.net_connections("inet"), max(3, plan.repeats // 3)
            )
        ours_ms, theirs_ms = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
        results.add(
            f"collect() at {size:,} connections ({sockets:,} sockets)",
            f"{ours_ms:.1f} ms",
            f"ss -tuna {theirs_ms:.1f} ms ({ss_lines:,} lines)",
            f"{ours_ms / theirs_ms:.2f}",
            **{f"collect_ms_{size}": ours_ms, f"ss_ms_{size}": theirs_ms},
        )
        results.add(
            f"  first collect() at {size:,} (reads every /proc/*/fd)",
            f"{cold * 1e3:.1f} ms",
            f"ss -tuna {theirs_ms:.1f} ms",
            f"{cold * 1e3 / theirs_ms:.2f}",
        )
        results.add(
            f"  psutil.net_connections at {size:,} (no counters)",
            f"{psutil_time * 1e3:.1f} ms",
            f"collect() {ours_ms:.1f} ms",
            f"{psutil_time * 1e3 / ours_ms:.2f}",
        )


def bench_cpu(plan: Plan, results: Results) -> None:
    """CPU of one agent cycle (collect + encode + gzip) as a share of one core per 10 s."""
    from smartmon.agent.collect import open_collector
    from smartmon.agent.report import agent_info, build_report, compress

    with established(plan.cpu_size):
        collector = open_collector("auto")
        try:
            info = agent_info(collector)
            build_report(collector, seq=0, interval_s=10, agent=info)  # warm the caches
            ours: list[float] = []
            theirs: list[float] = []
            size = 0
            for cycle in range(plan.cpu_cycles):
                start = time.process_time()
                body = compress(build_report(collector, seq=cycle, interval_s=10, agent=info))
                ours.append(time.process_time() - start)
                size = len(body)
                children = resource.getrusage(resource.RUSAGE_CHILDREN)
                _run_ss()
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                theirs.append(
                    after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
                )
        finally:
            collector.close()
    cpu_ms, ss_ms = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
    share = cpu_ms / 1e3 / CYCLE_INTERVAL_S * 100
    results.add(
        f"CPU per 10 s cycle at {plan.cpu_size:,} connections (collect+encode+gzip)",
        f"{cpu_ms:.1f} ms = {share:.3f}% core",
        f"ss -tuna CPU {ss_ms:.1f} ms",
        f"{cpu_ms / ss_ms:.2f}" if ss_ms else "-",
        cpu_share_percent=share,
        report_gzip_bytes=size,
    )


def bench_memory(plan: Plan, results: Results) -> None:
    """Resident memory of an agent process, and its growth over many cycles."""
    for size, cycles in plan.rss_runs:
        _memory_at(size, cycles, results)


def _memory_at(size: int, cycles: int, results: Results) -> None:
    with established(size):
        child = _child("agent-rss", str(cycles))
        output, _ = child.communicate(timeout=600)
    measured = json.loads(output)
    samples = {int(cycle): rss for cycle, rss in measured["samples"].items()}
    first, last = samples[1], samples[max(samples)]
    # Growth is judged once the caches are warm; the first cycles fill them.
    warm = 100 if 100 in samples and max(samples) > 100 else min(samples)
    mib = 1 / 2**20
    results.add(
        f"agent RSS at {size:,} connections ({measured['sockets']:,} sockets)",
        f"{measured['peak'] * mib:.1f} MiB peak",
        f"bare interpreter {measured['bare'] * mib:.1f} MiB",
        f"{measured['peak'] / measured['bare']:.2f}",
        **{f"rss_peak_mib_{size}": measured["peak"] * mib},
    )
    series = ", ".join(f"{cycle:,}: {rss * mib:.2f}" for cycle, rss in sorted(samples.items()))
    results.notes.append(f"RSS (MiB) by cycle at {size:,} connections: {series}.")
    if max(samples) < 200:
        return  # too few cycles to say anything about growth
    results.add(
        f"  RSS growth from cycle {warm:,} to cycle {max(samples):,}",
        f"{(last - samples[warm]) * mib:+.2f} MiB",
        f"after cycle 1 {first * mib:.1f} MiB",
        "-",
        **{f"rss_growth_mib_{size}": (last - samples[warm]) * mib},
    )


def bench_churn(plan: Plan, results: Results) -> None:
    """Short-lived connections at churn_rate/s: agent (destroy events) vs psutil each second."""
    import psutil

    from smartmon.agent.collect import open_collector

    # Two generators, half the rate each: one Python process cannot reliably open, use and
    # close a thousand connections a second while the pollers share the machine.
    generators = [
        _child("churn", str(plan.churn_rate / CHURN_PROCESSES), str(plan.churn_seconds))
        for _ in range(CHURN_PROCESSES)
    ]
    ports = set()
    for generator in generators:
        assert generator.stdout is not None
        ports.add(int(generator.stdout.readline()))
    seen_by_agent: set[tuple[int, int]] = set()
    seen_by_psutil: set[tuple[int, int]] = set()
    with_counters: set[tuple[int, int]] = set()
    stop = threading.Event()
    collector = open_collector("netlink")

    def poll_agent() -> None:
        while True:
            connections, closed = collector.poll()
            for connection in connections:
                if connection.dest_port in ports and connection.state != "TIME_WAIT":
                    seen_by_agent.add((connection.dest_port, connection.source_port))
            for connection in closed:
                if connection.dest_port in ports:
                    seen_by_agent.add((connection.dest_port, connection.source_port))
                    if connection.bytes_out == CHURN_PAYLOAD:
                        with_counters.add((connection.dest_port, connection.source_port))
            if stop.wait(1.0) and not closed:
                return

    def poll_psutil() -> None:
        while not stop.wait(1.0):
            for entry in psutil.net_connections("tcp4"):
                if entry.raddr and entry.raddr[1] in ports and entry.status != "TIME_WAIT":
                    seen_by_psutil.add((entry.raddr[1], entry.laddr[1]))

    pollers = [threading.Thread(target=poll_agent), threading.Thread(target=poll_psutil)]
    for poller in pollers:
        poller.start()
    for generator in generators:
        assert generator.stdin is not None
        generator.stdin.write("go\n")
        generator.stdin.flush()
    opened: set[tuple[int, int]] = set()
    seconds = 0.0
    for generator in generators:
        assert generator.stdout is not None and generator.stdin is not None
        outcome = json.loads(generator.stdout.readline())
        opened |= {(outcome["port"], client) for client in outcome["clientPorts"]}
        seconds = max(seconds, outcome["seconds"])
        generator.stdin.close()
        generator.wait(timeout=60)
        generator.stdout.close()
    time.sleep(0.5)  # the last destroy events
    stop.set()
    for poller in pollers:
        poller.join(timeout=30)
    lost = getattr(collector, "lost_close_events", 0)
    collector.close()
    rate = len(opened) / seconds
    agent_share = len(opened & seen_by_agent) / len(opened)
    psutil_share = len(opened & seen_by_psutil) / len(opened)
    results.add(
        f"short-lived TCP captured at {rate:,.0f} new/s for {seconds:.0f} s",
        f"{agent_share * 100:.2f}%",
        f"psutil every 1 s {psutil_share * 100:.2f}%",
        f"{agent_share / psutil_share:.1f}" if psutil_share else "inf",
        capture_agent=agent_share,
        capture_psutil=psutil_share,
    )
    results.add(
        "  of them closed with their final byte counts",
        f"{len(opened & with_counters) / len(opened) * 100:.2f}%",
        f"destroy events lost: {lost}",
        "-",
    )


# ---- the document --------------------------------------------------------------------


def _machine() -> str:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu = next(
                line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def render(results: Results, command: str) -> str:
    """The Agent section of docs/benchmarks.md."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    notes = "\n".join(results.notes)
    rows = "\n".join(
        f"| {name.strip()} | {value} | {base} | {ratio} |"
        for name, value, base, ratio in results.lines
    )
    return f"""{SECTION_TITLE}

Command: `{command}`, {now}. Machine: {_machine()}.
Ratio = value / baseline, measured side by side in the same run.
Targets: `collect()` no slower than `ss -tuna` (ratio <= 1.0), <= 0.2% of one core per 10 s
cycle at 1,000 connections, RSS <= 40 MB at 10,000 sockets with no growth, >= 99% of
short-lived connections captured.

| measure | value | baseline | ratio |
|---|---|---|---|
{rows}

`collect()` gives sockets, per-connection TCP byte/packet counters and owning processes;
`ss -tuna` gives sockets only. Each TCP dump walks the kernel's whole established hash
table (262,144 buckets here), about 2 ms per family whatever the socket count: `ss` pays it
too. Connections are loopback pairs, so the dumps hold two sockets per connection; the
client ends live in the benchmark process, the server ends in a child. The first
`collect()` reads every /proc/*/fd to name owners; later ones read /proc only for sockets
they have not seen. Agent RSS is VmHWM of a child that imports what `smartmon agent`
imports and runs collect + encode + gzip each cycle (destroy events on); the baseline is
that child before its imports. Short-lived connections: two generator processes open,
use (100 bytes) and close connections, the server end closing first; the agent polls every
second with destroy events on, psutil polls every second beside it; a connection counts
as captured when its client end is reported open or closed (TIME_WAIT leftovers, which
carry neither owner nor counters, do not count).

{notes}
"""


def write_section(section: str, path: Path = DOC) -> None:
    """Replace the Agent section of the document (or add it), leaving the others intact."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION_TITLE)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip() + "\n\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip() + "\n")


def run(plan: Plan) -> Results:
    """Every measurement of the plan."""
    raise_fd_limit()
    results = Results()
    bench_collect(plan, results)
    bench_cpu(plan, results)
    bench_memory(plan, results)
    bench_churn(plan, results)
    return results


def section(quick: bool) -> Section:
    """The agent benchmark for the suite runner (`python -m bench`)."""
    plan = Plan.quick() if quick else Plan.full()
    results = run(plan)
    f = results.figures
    figures = [
        Figure(
            f"agent collect() at {size:,} connections (median)", f[f"collect_ms_{size}"], "ms",
            "ss -tuna", f[f"ss_ms_{size}"], "ratio <= 1.0", f[f"collect_ms_{size}"] <= f[f"ss_ms_{size}"],
        )
        for size in plan.sizes
    ] + [
        Figure(
            f"agent CPU per 10 s cycle at {plan.cpu_size:,} connections", f["cpu_share_percent"],
            "% of a core", target="<= 0.2%", ok=f["cpu_share_percent"] <= 0.2,
        ),
    ] + [
        Figure(
            f"agent RSS peak at {size:,} connections (~{2 * size:,} sockets)",
            f[f"rss_peak_mib_{size}"] * 1.048576, "MB",
            # the target speaks of 10,000 sockets: loopback pairs, so 5,000 connections
            target="<= 40 MB" if size == 5_000 else "",
            ok=f[f"rss_peak_mib_{size}"] * 1.048576 <= 40 if size == 5_000 else None,
        )
        for size, _ in plan.rss_runs
    ] + [
        Figure(
            "short-lived TCP connections captured", 100 * f["capture_agent"], "%",
            "psutil polled every second", 100 * f["capture_psutil"], ">= 99%", f["capture_agent"] >= 0.99,
        ),
    ]  # fmt: skip
    body = render(results, "python -m bench.agent_bench" + (" --quick" if quick else ""))
    details = body.split("\n", 2)[2]  # the rendered section without its title line
    return Section("Agent", "python -m bench.agent_bench", figures, details)


def main() -> None:
    """Command line: run the benchmark, print the figures, record them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--no-write", action="store_true", help="leave docs/benchmarks.md alone")
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        role, *values = args.role
        if role == "hold":
            role_hold(int(values[0]))
        elif role == "churn":
            role_churn(float(values[0]), float(values[1]))
        elif role == "agent-rss":
            role_agent_rss(int(values[0]))
        return
    command = "python -m bench.agent_bench" + (" --quick" if args.quick else "")
    results = run(Plan.quick() if args.quick else Plan.full())
    if not args.no_write:
        write_section(render(results, command))
        print(f"recorded in {DOC}")


if __name__ == "__main__":
    main()
