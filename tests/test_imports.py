"""Dependency direction: each entry point imported alone, in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("litestar", "textual", "aiosqlite", "httpx", "uvicorn", "argon2", "jwt")


def loaded(statement: str) -> set[str]:
    """Top-level packages in sys.modules after running statement in a new interpreter."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("statement", "forbidden"),
    [
        ("import smartmon.wire", ("litestar", "textual", "aiosqlite", "httpx", "uvicorn")),
        ("import smartmon.server.app", ("textual",)),
        ("import smartmon.cli", ("litestar", "textual", "aiosqlite", "uvicorn")),
        ("import smartmon.client", ("litestar", "textual", "aiosqlite", "uvicorn")),
        ("import smartmon.api", ("litestar", "textual", "aiosqlite", "httpx")),
    ],
)
def test_entry_point_imports(statement: str, forbidden: tuple[str, ...]) -> None:
    modules = loaded(statement)
    assert not modules & set(forbidden), modules & set(forbidden)


def test_wire_imports_only_msgspec() -> None:
    modules = loaded("import smartmon.wire")
    assert "msgspec" in modules
    assert not modules & set(HEAVY)


def test_cli_help_stays_light() -> None:
    """`smartmon --help` (what completion and every typo runs) does not load the server."""
    code = (
        "import sys\nfrom smartmon.cli import app\n"
        "try:\n    app(['--help'], prog_name='smartmon')\nexcept SystemExit:\n    pass\n"
        "print('MODULES', sorted({m.split('.')[0] for m in sys.modules}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    modules = r.stdout.rsplit("MODULES", 1)[1]
    for name in ("litestar", "aiosqlite", "uvicorn"):
        assert f"'{name}'" not in modules, name
