"""`smartmon serve` as a real process: signals, secrets, a busy port, a bad database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.conftest import free_port

SMARTMON = str(Path(sys.executable).with_name("smartmon"))


class Served:
    """A `smartmon serve` process and its output."""

    def __init__(self, data_dir: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [SMARTMON, "serve", "--port", str(port), "--data-dir", str(data_dir), "--log-level", "info"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited early: {self.finish()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("serve did not become ready")

    def finish(self, timeout: float = 20) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "data", free_port())
    try:
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.communicate()


def register_admin(url: str) -> str:
    r = httpx.post(
        url + "/api/auth/register",
        json={"username": "root", "password": "root-password-1"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["accessToken"])


def one_clear_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly(served: Served, sig: signal.Signals, tmp_path: Path) -> None:
    served.wait_ready()
    token = register_admin(served.url)
    enrollment = httpx.post(
        served.url + "/api/tokens", json={}, headers={"authorization": f"Bearer {token}"}
    ).json()["token"]
    assert enrollment.startswith("smt_")
    served.proc.send_signal(sig)
    code, _out, err = served.finish()
    assert code == 0, err
    assert "database closed" in err
    assert "Traceback" not in err
    # what was written before the signal is in the file
    restarted = Served(tmp_path / "data", free_port())
    try:
        restarted.wait_ready()
        r = httpx.get(restarted.url + "/api/tokens", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200 and len(r.json()) == 1
    finally:
        restarted.proc.send_signal(signal.SIGTERM)
        assert restarted.finish()[0] == 0


def test_in_flight_request_finishes_on_sigterm(served: Served) -> None:
    """A request already sent when SIGTERM arrives still gets its answer."""
    served.wait_ready()
    token = register_admin(served.url)
    enroll = httpx.post(
        served.url + "/api/monitor/register",
        json={"deviceName": "d"},
        headers={"authorization": f"Bearer {token}"},
    )
    key = enroll.json()["deviceKey"]
    body = (
        b'{"reportId":"'
        + str(uuid.uuid4()).encode()
        + b'","seq":1,"collectedAt":"2026-01-01T00:00:00Z",'
        b'"intervalS":10,"connections":[]}'
    )
    with socket.create_connection(("127.0.0.1", served.port)) as sock:
        head = (
            f"POST /api/monitor/connections HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[:10])  # the request is in flight: headers and part of the body
        time.sleep(0.3)
        served.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        sock.sendall(body[10:])
        answer = sock.recv(65536).decode()
    assert answer.startswith("HTTP/1.1 200"), answer
    code, _, err = served.finish()
    assert code == 0 and "database closed" in err


def test_short_secret_is_refused(tmp_path: Path) -> None:
    s = Served(tmp_path / "data", free_port(), env={"SMARTMON_JWT_SECRET": "too-short"})
    code, _out, err = s.finish()
    assert code == 6
    line = one_clear_line(err)
    assert "32" in line and "secret" in line.lower()
    assert not (tmp_path / "data" / "smartmon.db").exists()


def test_prototype_jwt_secret_is_honoured(tmp_path: Path) -> None:
    secret = "prototype-secret-" + "x" * 32
    s = Served(tmp_path / "data", free_port(), env={"JWT_SECRET": secret})
    try:
        s.wait_ready()
        register_admin(s.url)
        now = int(time.time())
        forged_by_owner = jwt.encode(
            {"sub": "1", "role": "admin", "jti": uuid.uuid4().hex, "iat": now, "exp": now + 600},
            secret, algorithm="HS256",
        )  # fmt: skip
        r = httpx.get(
            s.url + "/api/auth/me", headers={"authorization": f"Bearer {forged_by_owner}"}
        )
        assert r.status_code == 200 and r.json()["username"] == "root"
        assert not (tmp_path / "data" / "jwt-secret").exists(), "no file when the secret is given"
    finally:
        s.proc.send_signal(signal.SIGTERM)
        assert s.finish()[0] == 0


def test_smartmon_secret_wins_over_prototype_secret(tmp_path: Path) -> None:
    ours, theirs = "s" * 40, "p" * 40
    s = Served(
        tmp_path / "data", free_port(), env={"SMARTMON_JWT_SECRET": ours, "JWT_SECRET": theirs}
    )
    try:
        s.wait_ready()
        token = register_admin(s.url)
        assert jwt.decode(token, ours, algorithms=["HS256"])["sub"] == "1"
        now = int(time.time())
        other = jwt.encode(
            {"sub": "1", "jti": "x", "iat": now, "exp": now + 600}, theirs, algorithm="HS256"
        )
        assert (
            httpx.get(
                s.url + "/api/auth/me", headers={"authorization": f"Bearer {other}"}
            ).status_code
            == 401
        )
    finally:
        s.proc.send_signal(signal.SIGTERM)
        assert s.finish()[0] == 0


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        s = Served(tmp_path / "data", port)
        code, _out, err = s.finish()
    assert code == 6
    line = one_clear_line(err)
    assert str(port) in line and "in use" in line.lower()


def test_bad_database_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "smartmon.db").write_bytes(b"this is not a database" * 100)
    s = Served(data, free_port())
    code, _out, err = s.finish()
    assert code == 6
    assert "database" in one_clear_line(err)
