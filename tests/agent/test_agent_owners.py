"""Process attribution: as root, as an unprivileged user, and the inode cache."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from agent_sockets import Sockets, by_key, key_of, linux_only, reversed_key, root_only

from smartmon.agent.collect import Collector
from smartmon.agent.netlink import NetlinkCollector
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


def test_proc_is_read_only_for_new_sockets(owned: Sockets) -> None:
    collector = NetlinkCollector(close_events=False)
    try:
        owned.listener()
        collector.poll()
        scans = collector.proc_scans

        collector.poll()
        assert collector.proc_scans == scans  # nothing new: /proc is not read again

        listener = owned.listener()
        found = by_key(collector.poll()[0])[key_of(listener)]
        assert collector.proc_scans == scans + 1
        assert found.pid == os.getpid()

        collector.poll()
        assert collector.proc_scans == scans + 1
    finally:
        collector.close()


def test_an_accepted_socket_gets_its_owner(owned: Sockets, netlink: Collector) -> None:
    full = owned.listener()
    queued = owned.add(socket.create_connection(full.getsockname()))
    server_key = reversed_key(key_of(queued))
    assert by_key(netlink.poll()[0])[server_key].pid is None  # not accepted: no file yet

    owned.add(full.accept()[0])

    assert by_key(netlink.poll()[0])[server_key].pid == os.getpid()


def test_inode_owners_finds_the_holders_of_inodes(owned: Sockets) -> None:
    owners = InodeOwners()
    listener = owned.listener()
    inode = os.fstat(listener.fileno()).st_ino

    found = owners.resolve([inode, 999_999_999, 0])

    assert list(found) == [inode]
    pid, name = found[inode]
    assert pid == os.getpid() and name


def test_collector_names_the_owning_process(owned: Sockets, netlink: Collector) -> None:
    listener = owned.listener()

    found = by_key(netlink.poll()[0])[key_of(listener)]

    assert found.pid == os.getpid()
    with open(f"/proc/{os.getpid()}/comm") as comm:
        assert found.process is not None and found.process.startswith(comm.read().strip())
