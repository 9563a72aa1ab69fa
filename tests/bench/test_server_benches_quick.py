"""The quick mode of the server benchmarks runs, so they never rot (no timing asserted)."""

from bench import ingest_bench, server_bench
from bench.report import render


def test_ingest_bench_quick_mode_stores_every_report() -> None:
    section = ingest_bench.section(quick=True)
    assert section.figures[0].name == "ingest throughput"
    assert section.figures[0].value > 0 and section.figures[0].baseline
    assert "| errors |" in section.details
    # every request of every phase was answered 200
    assert "| 0 |" in section.details.split("ingest, closed loop")[1].splitlines()[0]


def test_server_bench_quick_mode_sees_stream_events_and_renders() -> None:
    section = server_bench.section(quick=True)
    names = [f.name for f in section.figures]
    assert any(n.startswith("dashboard list, 50 devices") for n in names)
    assert any(n == "POST -> stream event p95" for n in names)
    document = render([section], "test")
    assert "## Dashboard list and live stream" in document and "| measure |" in document
