"""Fixtures for the agent tests: collectors, socket owners, and a runner for the command."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_sockets import Sockets, sockets

from smartmon.agent.collect import Collector, open_collector


@pytest.fixture
def owned() -> Iterator[Sockets]:
    """Sockets opened by the test, all closed afterwards."""
    with sockets() as owner:
        yield owner


@pytest.fixture
def netlink() -> Iterator[Collector]:
    """The netlink collector with destroy events."""
    collector = open_collector("netlink")
    try:
        yield collector
    finally:
        collector.close()


@pytest.fixture
def psutil_collector() -> Iterator[Collector]:
    """The portable collector."""
    collector = open_collector("psutil")
    try:
        yield collector
    finally:
        collector.close()


@pytest.fixture
def agent_env(tmp_path: Path) -> dict[str, str]:
    """An environment for the agent command with its own XDG dirs and no inherited settings."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("SMARTMON_", "MONITOR_", "XDG_"))
    }
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    return env
