"""A `smartmon serve` process plus one trivial POST endpoint: the HTTP ceiling of the same stack.

Run: python -m bench.bench_server --port P --data-dir D
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
from litestar import post
from litestar.params import JSONBody

from smartmon.server.serve import run
from smartmon.settings import ServerSettings

TRIVIAL_PATH = "/bench/trivial"


class Anything(msgspec.Struct):
    """Accepts any JSON object without looking inside."""


@post(TRIVIAL_PATH, status_code=200)
async def trivial(data: JSONBody[Anything]) -> dict[str, bool]:
    """Parse the body, answer: what every endpoint costs at least."""
    return {"ok": True}


def main() -> None:
    """Serve until SIGTERM."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    settings = ServerSettings(data_dir=args.data_dir, port=args.port, open_registration=True)
    run(settings, log_level="warning", extra_handlers=[trivial])


if __name__ == "__main__":
    main()
