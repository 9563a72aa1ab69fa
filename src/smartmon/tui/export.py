"""Writing the current view to a CSV or JSON file the user named."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

Format = Literal["csv", "json"]


class ExportError(Exception):
    """The file could not be written (the message says why, for the user)."""


def format_for(path: str) -> Format | None:
    """The format a file name asks for by its extension."""
    suffix = Path(path).suffix.lower()
    return "csv" if suffix == ".csv" else "json" if suffix == ".json" else None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    if value is None:
        return ""
    return _plain(value)


def write_rows(
    path: Path, fmt: Format, rows: Sequence[dict[str, Any]], fields: Sequence[str]
) -> Path:
    """Write rows atomically (0600: the data names hosts and processes); returns the path."""
    target = path.expanduser().resolve()
    if target.is_dir():
        raise ExportError(f"{target} is a directory")
    if not target.parent.is_dir():
        raise ExportError(f"the folder {target.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-")
    except OSError as exc:
        raise ExportError(f"cannot write in {target.parent}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            if fmt == "csv":
                writer = csv.DictWriter(handle, fieldnames=list(fields))
                writer.writeheader()
                for row in rows:
                    writer.writerow({k: _csv_cell(row.get(k)) for k in fields})
            else:
                plain = [{k: _plain(row.get(k)) for k in fields} for row in rows]
                json.dump(plain, handle, indent=2)
                handle.write("\n")
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target
