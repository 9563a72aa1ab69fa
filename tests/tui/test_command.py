"""`smartmon tui`: light to import, never the server."""

from __future__ import annotations

import subprocess
import sys


def test_tui_help_loads_neither_the_server_nor_textual() -> None:
    code = (
        "import sys\nfrom smartmon.cli import app\n"
        "try:\n    app(['tui', '--help'], prog_name='smartmon')\nexcept SystemExit as exc:\n"
        "    assert exc.code in (0, None), exc.code\n"
        "print('MODULES', sorted(sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--server" in r.stdout
    modules = r.stdout.rsplit("MODULES", 1)[1]
    assert "'smartmon.server" not in modules and "'textual" not in modules


def test_the_whole_tui_never_imports_the_server() -> None:
    code = (
        "import sys\nimport smartmon.tui.app, smartmon.tui.screens.device, smartmon.tui.screens.dashboard\n"
        "import smartmon.tui.screens.login, smartmon.tui.command\n"
        "print(sorted(m for m in sys.modules if m.startswith(('smartmon.server', 'litestar', 'aiosqlite'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
