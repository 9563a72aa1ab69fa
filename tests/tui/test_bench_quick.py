"""The TUI benchmark's quick mode runs, so it never rots (no timing asserted)."""

from bench import tui_bench
from bench.report import render


def test_tui_bench_quick_mode_measures_updates_and_resyncs() -> None:
    section = tui_bench.section(quick=True)
    names = [f.name for f in section.figures]
    assert names[0].startswith("apply one device update, 500 devices")
    assert any(n.startswith("full resync, 500 devices") for n in names)
    assert all(f.value > 0 for f in section.figures)
    assert (
        section.figures[0].baseline_name == "DataTable update_cell" and section.figures[0].baseline
    )
    assert "## TUI" in render([section], "test")
