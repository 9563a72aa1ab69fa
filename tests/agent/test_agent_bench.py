"""The agent benchmark's quick mode runs (so it never rots) and records only its own section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from agent_sockets import linux_only

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.agent_bench import Results, render, write_section  # noqa: E402

pytestmark = [linux_only, pytest.mark.slow]


def test_quick_mode_measures_everything() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.agent_bench", "--quick", "--no-write"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for measure in ("collect() at 200", "CPU per 10 s cycle", "agent RSS at 200", "captured"):
        assert any(measure in line for line in lines), measure
    captured = next(line for line in lines if "short-lived TCP captured" in line)
    agent_share = float(captured.split("%")[0].split()[-1])
    psutil_share = float(captured.split("psutil every 1 s")[1].split("%")[0])
    assert 0 <= psutil_share <= agent_share <= 100


def test_the_agent_section_replaces_only_itself(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        "# Benchmarks\n\n## Ingest\n\nserver figures\n\n## Agent\n\nstale agent figures\n\n## TUI\n\ntui\n"
    )
    results = Results()
    results.add("collect() at 1", "1.0 ms", "ss -tuna 2.0 ms", "0.50")

    write_section(render(results, "python -m bench.agent_bench"), doc)
    write_section(render(results, "python -m bench.agent_bench"), doc)

    text = doc.read_text()
    assert "server figures" in text and "\n## TUI\n\ntui\n" in text
    assert "stale agent figures" not in text and text.count("## Agent") == 1
    assert "| collect() at 1 | 1.0 ms | ss -tuna 2.0 ms | 0.50 |" in text


def test_the_agent_section_is_added_to_a_document_without_one(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Ingest\n\nserver figures\n")

    write_section(render(Results(), "python -m bench.agent_bench"), doc)

    text = doc.read_text()
    assert text.index("## Ingest") < text.index("## Agent")
    assert "server figures" in text
