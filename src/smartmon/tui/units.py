"""Human-readable bytes, rates, ages and times for the screens (formatting only, at the edge)."""

from __future__ import annotations

from datetime import datetime

_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")


def human_bytes(value: float | None) -> str:
    """1234567 -> '1.2 MB' (decimal units, as network tools count); None -> '-'."""
    if value is None:
        return "-"
    size = float(value)
    for unit in _UNITS:
        if abs(size) < 1000 or unit == _UNITS[-1]:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def human_rate(value: float | None) -> str:
    """Bytes per second -> '1.2 MB/s'; None (unknown) -> '-'."""
    return "-" if value is None else human_bytes(value) + "/s"


def human_duration(seconds: float) -> str:
    """A short duration: '45s', '12m', '3h 5m', '2d 4h'."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes}m" if minutes >= 10 or not s else f"{minutes}m {s}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def relative(when: datetime | None, now: float) -> str:
    """'just now', '12s ago', '3h 5m ago'; 'never' for None; future times (skew) as 'just now'."""
    if when is None:
        return "never"
    age = now - when.timestamp()
    if age < 1:
        return "just now"
    return human_duration(age) + " ago"


def clock_time(when: datetime | float) -> str:
    """Local wall-clock time, 'HH:MM:SS'."""
    moment = when if isinstance(when, datetime) else datetime.fromtimestamp(when).astimezone()
    return moment.astimezone().strftime("%H:%M:%S")


def local_datetime(when: datetime | None) -> str:
    """'2026-12-04 20:00:00' in local time; '-' for None."""
    return "-" if when is None else when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def endpoint(ip: str, port: int) -> str:
    """'10.0.0.1:443', '[2001:db8::1]:443'."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
