"""Process attribution: as root, as an unprivileged user, and the inode cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from agent_sockets import Sockets, by_key, key_of, linux_only, root_only

from smartmon.agent.collect import Collector
from smartmon.agent.processes import InodeOwners

pytestmark = linux_only

NOBODY = 65534

# The interpreter lives where `nobody` cannot read (/root/.pyenv): import everything as
# root, then drop to nobody in the same process instead of exec'ing a new one.
_DROP_TO_NOBODY = "import os; os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
_AS_NOBODY = (
    """
import json, os, socket, sys
from smartmon.agent.collect import open_collector
import smartmon.agent.sockdiag
"""
    + _DROP_TO_NOBODY
    + """

mine = socket.socket()
mine.bind(("127.0.0.1", 0))
mine.listen()
root_port = int(sys.argv[1])
result = {"uid": os.getuid(), "pid": os.getpid()}
for kind in ("netlink", "psutil"):
    collector = open_collector(kind, close_events=False)
    connections, _ = collector.poll()
    collector.close()
    ports = {c.source_port: c.pid for c in connections if c.state == "LISTEN"}
    result[kind] = {
        "mine": ports.get(mine.getsockname()[1], "absent"),
        "root": ports.get(root_port, "absent"),
        "processes": collector.capabilities.processes,
        "missing": collector.capabilities.missing,
    }
mine.close()
print(json.dumps(result))
"""
)


@root_only
def test_root_attributes_every_socket(owned: Sockets, netlink: Collector) -> None:
    listener = owned.listener()
    listen_as_nobody = (
        "import socket, time\n"
        + _DROP_TO_NOBODY
        + "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True); time.sleep(30)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", listen_as_nobody], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        child_port = int(child.stdout.readline())
        seen = {c.source_port: c for c in netlink.poll()[0] if c.state == "LISTEN"}
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()

    assert seen[listener.getsockname()[1]].pid == os.getpid()
    # Another user's process: root (CAP_SYS_PTRACE) still sees who owns it.
    assert seen[child_port].pid == child.pid
    assert seen[child_port].process == "python3" or seen[child_port].process.startswith("python")


@root_only
def test_unprivileged_agent_names_only_its_own_processes(owned: Sockets) -> None:
    root_listener = owned.listener()

    done = subprocess.run(
        [sys.executable, "-c", _AS_NOBODY, str(root_listener.getsockname()[1])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    result = json.loads(done.stdout)
    assert result["uid"] == NOBODY
    for kind in ("netlink", "psutil"):
        view = result[kind]
        assert view["mine"] == result["pid"], kind
        assert view["root"] is None, kind  # listed, but the owner is not guessed
        assert view["processes"] == "own"
        assert any("CAP_SYS_PTRACE" in sentence for sentence in view["missing"])


def test_inode_cache_rescans_only_for_new_sockets(owned: Sockets) -> None:
    owners = InodeOwners()
    first = owned.listener()
    first_inode = os.fstat(first.fileno()).st_ino
    owners.refresh([first_inode])
    assert owners.owner(first_inode) == (os.getpid(), owners.owner(first_inode)[1])  # type: ignore[index]
    scans = owners.scans

    owners.refresh([first_inode])
    assert owners.scans == scans  # nothing new: /proc is not read again

    second = owned.listener()
    second_inode = os.fstat(second.fileno()).st_ino
    owners.refresh([first_inode, second_inode])
    assert owners.scans == scans + 1
    assert owners.owner(second_inode) is not None

    # An inode no process holds is looked for once, then remembered as unowned.
    owners.refresh([first_inode, second_inode, 999_999_999])
    owners.refresh([first_inode, second_inode, 999_999_999])
    assert owners.scans == scans + 2
    assert owners.owner(999_999_999) is None


def test_inode_cache_forgets_closed_sockets(owned: Sockets) -> None:
    owners = InodeOwners()
    listener = owned.listener()
    inode = os.fstat(listener.fileno()).st_ino
    owners.refresh([inode])
    assert owners.owner(inode) is not None

    owners.refresh([])

    assert owners.owner(inode) is None


def test_collector_names_the_owning_process(owned: Sockets, netlink: Collector) -> None:
    listener = owned.listener()

    found = by_key(netlink.poll()[0])[key_of(listener)]

    assert found.pid == os.getpid()
    with open(f"/proc/{os.getpid()}/comm") as comm:
        assert found.process is not None and found.process.startswith(comm.read().strip())
