"""The smartmon agent: collects every TCP/UDP socket on a device and reports it to a server.

Public API: `collect()` returns the machine's connections now, as the agent reports them
(`smartmon.wire.Connection` structs). The command is `smartmon.agent.command.agent`.
"""

from smartmon.agent.collect import collect

__all__ = ["collect"]
