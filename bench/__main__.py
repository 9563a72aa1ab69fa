"""Run every benchmark beside its baseline and rewrite docs/benchmarks.md.

Usage: python -m bench [--quick] [--only NAME ...] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from bench.report import Section, figures_table, write

# module name -> title; each module has section(quick: bool) -> Section
BENCHMARKS = {
    "agent_bench": "agent",
    "ingest_bench": "ingest",
    "server_bench": "dashboard and stream",
    "tui_bench": "TUI",
}
DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes, as the test suite runs them"
    )
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument(
        "--no-write", action="store_true", help="print, don't rewrite docs/benchmarks.md"
    )
    args = parser.parse_args()
    sections: list[Section] = []
    for name in args.only or BENCHMARKS:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        module = importlib.import_module(f"bench.{name}")
        result: Section = module.section(args.quick)
        print(figures_table(result.figures), file=sys.stderr)
        sections.append(result)
    if not args.no_write and not args.quick:
        command = "make bench" if not args.only else "python -m bench --only " + " ".join(args.only)
        write(sections, DOCUMENT, command)
        print(f"wrote {DOCUMENT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
