"""Machine-readable benchmark output, collected by ``benchmarks/run.py``.

A benchmark script that takes ``--json PATH`` writes one JSON object there::

    {"benchmark": "detection",
     "versions": {"jax": "0.10.2", "asdex": "0.5.1"},
     "tables": [{"title": "...", "columns": ["case", "peer", "t ours [s]", ...],
                 "rows": [["Rosenbrock ...", "asdex 0.5.1", 0.05, ...], ...],
                 "notes": ["..."]}]}

Cells are numbers, strings or ``null``; every table names its peer (and the peer's version) in
a ``peer`` column, so that each row of the collected Markdown says what it was compared with.
Scripts without ``--json`` still work with ``run.py``: it reads the Markdown tables they print,
and shows their output verbatim.
"""

from __future__ import annotations

import json
import math
import pathlib


def add_json_argument(parser) -> None:
    """Add ``--json PATH`` to an ``argparse`` parser."""
    parser.add_argument("--json", metavar="PATH", default=None,
                        help="also write the result tables as JSON (read by benchmarks/run.py)")


def version(module_name: str) -> str:
    """``"name X.Y.Z"`` for an importable module (its distribution version if it has none)."""
    from importlib import import_module
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        v = getattr(import_module(module_name), "__version__", None)
    except ImportError:
        v = None
    if v is None:
        try:
            v = dist_version(module_name)
        except PackageNotFoundError:
            v = "?"
    return f"{module_name} {v}"


def table(title: str, columns, rows, notes=()) -> dict:
    """One result table: ``rows`` is a list of sequences as long as ``columns``."""
    columns = list(columns)
    out = []
    for r in rows:
        r = list(r)
        if len(r) != len(columns):
            raise ValueError(f"table {title!r}: row {r} has {len(r)} cells, expected "
                             f"{len(columns)} ({columns})")
        out.append([_cell(c) for c in r])
    return {"title": title, "columns": columns, "rows": out, "notes": list(notes)}


def _cell(c):
    if c is None or isinstance(c, bool | str):
        return c
    if hasattr(c, "item"):  # numpy scalar
        c = c.item()
    if isinstance(c, int):
        return c
    if isinstance(c, float):
        return None if math.isnan(c) else c
    return str(c)


def write_json(path, benchmark: str, tables, versions=None) -> None:
    """Write the tables to ``path`` (nothing when ``path`` is ``None``)."""
    if path is None:
        return
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"benchmark": benchmark, "versions": dict(versions or {}),
                             "tables": list(tables)}, indent=1))
