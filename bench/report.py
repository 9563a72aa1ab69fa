"""What every benchmark returns, and how docs/benchmarks.md is written from it."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Figure:
    """One measured figure beside the baseline it is judged against."""

    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: str = ""
    ok: bool | None = None

    @property
    def ratio(self) -> float | None:
        """value / baseline (None without a baseline)."""
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]


@dataclass
class Section:
    """The results of one benchmark module."""

    title: str
    command: str
    figures: list[Figure] = field(default_factory=list)
    details: str = ""


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def figures_table(figures: list[Figure]) -> str:
    """A Markdown table of figures."""
    lines = [
        "| measure | value | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        baseline = (
            f"{_fmt(f.baseline)} {f.unit} ({f.baseline_name})" if f.baseline is not None else "-"
        )
        met = "-" if f.ok is None else ("yes" if f.ok else "**no**")
        lines.append(
            f"| {f.name} | {_fmt(f.value)} {f.unit} | {baseline} | {_fmt(f.ratio)} | {f.target or '-'} | {met} |"
        )
    return "\n".join(lines)


def machine() -> str:
    """One line about this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.system()} {platform.release()},"
        f" Python {platform.python_version()}"
    )


def commit() -> str:
    """The current commit, short."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def render(sections: list[Section], command: str) -> str:
    """The whole of docs/benchmarks.md."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {now}, commit `{commit()}`.",
        f"Machine: {machine()}. The machine is shared and noisy, so every figure is measured",
        "beside its baseline in the same run and judged by the ratio.",
        "",
        "## Summary",
        "",
        figures_table([f for s in sections for f in s.figures]),
        "",
    ]
    for section in sections:
        parts += [f"## {section.title}", "", f"Command: `{section.command}`", ""]
        parts += [figures_table(section.figures), ""]
        if section.details:
            parts += [section.details.strip(), ""]
    return "\n".join(parts)


def write(sections: list[Section], path: Path, command: str) -> None:
    """Rewrite the benchmarks document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(sections, command))
