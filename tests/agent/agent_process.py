"""Running `smartmon agent` as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

AGENT_MAIN = Path(__file__).with_name("agent_main.py")


def agent_command(*args: str) -> list[str]:
    """argv that runs `smartmon agent ARGS` in a fresh interpreter."""
    return [sys.executable, str(AGENT_MAIN), *args]


def run_agent(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the agent command to completion."""
    return subprocess.run(
        agent_command(*args), env=env, capture_output=True, text=True, timeout=timeout
    )
