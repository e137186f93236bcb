"""Run every benchmark and collect the results: Markdown tables and PNG plots.

    python benchmarks/run.py --quick          # small sizes, a few minutes on 2 idle cores
    python benchmarks/run.py --full           # the sizes the scripts default to
    python benchmarks/run.py --quick --docs   # also refresh docs/benchmarks.md and its plots
    python benchmarks/run.py --quick --only detection,seed   # a subset (--skip NAME: all but)
    python benchmarks/run.py --quick --render --docs         # redo the report, run nothing

Each ``benchmarks/bench_*.py`` runs as its own process with single-threaded BLAS
(``OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1``), followed by the main example
(``examples/sparse_operator_fit.py``) for the seed problem's energy-against-time trace.
Scripts that take ``--json PATH`` (see ``benchmarks/_report.py``) hand over their tables as
data; for the others the Markdown tables they print are read back, and every script's output
is kept verbatim. Results go to ``benchmarks/results/<quick|full>/``: ``README.md`` (a summary
of every script with its status and time, then a table per comparison, each row naming its
peer and the peer's version) and the PNG plots next to it.

A script that fails or runs out of time is reported in the summary, with the end of its
error output; the others still run, and the command exits with status 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLE = ROOT / "examples" / "sparse_operator_fit.py"
PEERS = ("jax", "asdex", "casadi", "cyipopt-wheels", "scipy", "optimistix", "lineax", "numpy")
TIMEOUT = {"quick": 240, "full": 3600}  # seconds per script
# Extra arguments per script and mode, on top of --quick (kept small so --quick is quick).
EXTRA_ARGS = {
    ("seed", "quick"): ["--small"],
    # one subprocess per configuration; its IPOPT solve at n = 1e4 alone can take minutes
    ("sharding", "quick"): ["--no-solve", "--repeat", "2"],
    ("optimistix", "quick"): ["--bratu", "50"],  # N = 100 (n = 10⁴) only in --full
}


def _version(dist: str) -> str:
    try:
        return dist_version(dist)
    except PackageNotFoundError:
        return "not installed"


VERSIONS = {d: _version(d) for d in PEERS}


@dataclass
class Run:
    """One script's run: its status, output and tables."""

    name: str
    cmd: list
    rc: int | None = None
    wall: float = 0.0
    cpu: float = 0.0  # the script's CPU seconds (user + system): ~ its wall time on an idle core
    timed_out: bool = False
    skipped: bool = False  # not run: --skip
    stdout: str = ""
    stderr: str = ""
    tables: list = field(default_factory=list)
    data: dict | None = None
    plots: list = field(default_factory=list)  # (file name, caption)
    problems: list = field(default_factory=list)  # what went wrong after the run

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    @property
    def status(self) -> str:
        if self.skipped:
            return "**SKIPPED** (`--skip`): not run"
        if self.timed_out:
            return f"**TIMED OUT** after {self.wall:.0f} s"
        if self.rc is not None and self.rc < 0:
            try:
                sig = signal.Signals(-self.rc).name
            except ValueError:
                sig = str(-self.rc)
            hint = ": out of memory?" if sig == "SIGKILL" else ""
            return f"**FAILED** (killed by {sig}{hint})"
        if self.rc != 0:
            return f"**FAILED** (exit {self.rc})"
        return "ok" if not self.problems else "ok, with problems"


# ---------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------
def discover(only=None):
    """``(name, script)`` for every benchmark script, then the seed-problem trace."""
    found = [(p.stem.removeprefix("bench_"), p) for p in HERE.glob("bench_*.py")]
    found = sorted(found + [("seed", EXAMPLE)], key=lambda f: _order(f[0]))
    if only:
        unknown = set(only) - {n for n, _ in found}
        if unknown:
            raise SystemExit(f"--only: no benchmark named {sorted(unknown)}; "
                             f"have {[n for n, _ in found]}")
        found = [(n, p) for n, p in found if n in only]
    return found


def _children_cpu() -> float:
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return float("nan")
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def run_script(name, script, mode, workdir, timeout):
    """Run one script in its own process group; never raises for the script's failure."""
    json_path = workdir / f"{name}.json"
    if name == "seed":
        cmd = [sys.executable, str(script), "--trace-json", str(json_path)]
    else:
        cmd = [sys.executable, str(script)] + (["--quick"] if mode == "quick" else [])
        source = script.read_text()
        if "add_json_argument" in source or '"--json"' in source:
            cmd += ["--json", str(json_path)]
    cmd += EXTRA_ARGS.get((name, mode), [])
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
    r = Run(name, ["python", os.path.relpath(script, ROOT), *cmd[2:]])
    r.cmd = [c.replace(str(workdir), "<results>") for c in r.cmd]
    t = time.perf_counter()
    cpu0 = _children_cpu()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, text=True,
                                start_new_session=True)
        try:
            r.rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            r.timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)  # the script's own process group only
            r.rc = proc.wait()
        r.wall = time.perf_counter() - t
        r.cpu = _children_cpu() - cpu0
        out.seek(0)
        err.seek(0)
        r.stdout, r.stderr = out.read(), err.read()
    if json_path.exists():
        try:
            r.data = json.loads(json_path.read_text())
        except json.JSONDecodeError as e:
            r.problems.append(f"its --json output is not JSON: {e}")
    return r


# ---------------------------------------------------------------------------------------
# tables: from --json, else from the Markdown tables a script prints, else a known format
# ---------------------------------------------------------------------------------------
def _num(s):
    """A float for a numeric-looking cell ('0.049s', '14.5×', '1e-8'), else the cell."""
    if not isinstance(s, str):
        return s
    t = s.strip().rstrip("s×x%").strip()
    try:
        return float(t)
    except ValueError:
        return s


def markdown_tables(text):
    """The Markdown tables in ``text``: ``[{"columns", "rows"}]`` (cells as strings)."""
    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            block.append(line.strip())
            continue
        if len(block) >= 2 and re.fullmatch(r"\|[\s:|-]+\|?", block[1]):
            split = lambda ln: [c.strip() for c in ln.strip("|").split("|")]  # noqa: E731
            cols = split(block[0])
            rows = [split(b) for b in block[2:]]
            # short rows are padded; a last cell holding "|" (e.g. "|F|=1e-9") is rejoined
            rows = [r + [""] * (len(cols) - len(r)) if len(r) < len(cols)
                    else r[: len(cols) - 1] + ["|".join(r[len(cols) - 1:])] for r in rows]
            tables.append({"title": "", "columns": cols, "rows": rows, "notes": []})
        block = []
    return tables


GN_COLUMNS = ("Y, B", "nc", "n", "m", "route", "chosen", "colors", "setup s", "solve s", "steps",
              "ms/step", "E/E0")


def gauss_newton_table(text):
    """The fixed-width table of ``bench_gauss_newton.py`` (it prints no Markdown)."""
    rows, notes = [], []
    for line in text.splitlines():
        tok = line.split()
        if len(tok) >= 12 and tok[0] in ("dense", "selection") and tok[1].isdigit():
            rows.append(tok[:12] + [" ".join(tok[12:])])
        elif "auto / best fixed route" in line and rows:
            notes.append(f"{rows[-1][0]} nc={rows[-1][1]}: {line.strip()}")
    if not rows:
        return []
    return [{"title": "Gauss–Newton linear-solve routes on the seed problem",
             "columns": list(GN_COLUMNS) + ["note"], "rows": rows, "notes": notes}]


COMPRESSED_COLUMNS = ("colors", "asdex col", "ours", "asdex", "dense", "1 JVP", "ours/asdex",
                      "ours/(c·JVP)")


def compressed_table(text):
    """The fixed-width table of ``bench_compressed.py``: a case name (with spaces), then
    eight cells."""
    rows, notes, inside = [], [], False
    for line in text.splitlines():
        tok = line.split()
        if tok[:1] == ["case"] and "ours/asdex" in tok:
            inside = True
        elif inside and len(tok) > len(COMPRESSED_COLUMNS):
            rows.append([" ".join(tok[:-len(COMPRESSED_COLUMNS)])] + tok[-len(COMPRESSED_COLUMNS):])
        elif inside and not tok:
            inside = False
        elif "coloring a 1e6" in line:
            notes.append(line.strip())
    if not rows:
        return []
    return [{"title": "Per-call sparse derivative (jitted, median): ours vs asdex, dense JAX "
                      "and colors × one JVP/HVP",
             "columns": ["case"] + list(COMPRESSED_COLUMNS), "rows": rows, "notes": notes}]


def _seconds(cell):
    """Seconds from '123µs', '1.5ms', '0.2s' or a number; None otherwise."""
    if isinstance(cell, int | float) and not isinstance(cell, bool):
        return float(cell)
    m = re.fullmatch(r"\s*([\d.eE+-]+)\s*(µs|us|ms|s)?\s*", str(cell))
    if not m:
        return None
    try:
        v = float(m.group(1))
    except ValueError:
        return None
    return v * {"µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1.0}[m.group(2)]


def _cell(c):
    return c if c is None or isinstance(c, int | float | str) else json.dumps(c)


def add_peer(tab, peer):
    if "peer" in tab["columns"]:
        return tab
    return dict(tab, columns=tab["columns"][:1] + ["peer"] + tab["columns"][1:],
                rows=[r[:1] + [peer] + r[1:] for r in tab["rows"]])


DEFAULT_PEER = {
    "gauss_newton": lambda: f"jax {VERSIONS['jax']}, lineax {VERSIONS['lineax']}",
    "optimistix": lambda: (f"optimistix {VERSIONS['optimistix']}, lineax {VERSIONS['lineax']}"),
    "compressed": lambda: f"asdex {VERSIONS['asdex']}, jax {VERSIONS['jax']}",
    "scipy": lambda: f"scipy {VERSIONS['scipy']}",
    "sharding": lambda: f"jax {VERSIONS['jax']} (no peer: ours chunked / sharded vs unchunked)",
}


def collect_tables(r: Run):
    if r.name == "seed":
        return seed_tables(r)
    if isinstance(r.data, dict) and "tables" in r.data:  # benchmarks/_report.py's format
        return r.data["tables"]
    if isinstance(r.data, list) and r.data and all(isinstance(d, dict) for d in r.data):
        columns = list(dict.fromkeys(k for d in r.data for k in d))  # a script's own rows
        tab = {"title": TITLES.get(r.name, r.name), "columns": columns,
               "rows": [[_cell(d.get(c)) for c in columns] for d in r.data], "notes": []}
        return [add_peer(tab, DEFAULT_PEER.get(r.name, lambda: f"jax {VERSIONS['jax']}")())]
    tabs = markdown_tables(r.stdout)
    if not tabs and r.name == "gauss_newton":
        tabs = gauss_newton_table(r.stdout)
    if not tabs and r.name == "compressed":
        tabs = compressed_table(r.stdout)
    peer = DEFAULT_PEER.get(r.name, lambda: f"jax {VERSIONS['jax']}")()
    return [add_peer(t, peer) for t in tabs]


def seed_tables(r: Run):
    d = r.data
    if d is None:
        return []
    rows = []
    e0 = d["gauss_newton"]["energy"][0]
    for key, label, peer in (
        ("gauss_newton", "sa.GaussNewton (sparse Jacobian, route auto)",
         f"jax {d['versions']['jax']}"),
        ("lbfgs", "scipy L-BFGS-B, jitted JAX gradient", f"scipy {d['versions']['scipy']}"),
    ):
        t, e = d[key]["t"], d[key]["energy"]
        rows.append((label, peer, len(t) - (key == "gauss_newton"),
                     t[-1] if t else None, e[-1] / e0 if e else None))
    return [{"title": d["problem"] + " (one-off setup excluded for both)",
             "columns": ["solver", "peer", "iterations / evaluations", "time [s]", "E / E0"],
             "rows": [list(x) for x in rows],
             "notes": [f"Gauss–Newton setup (detection, coloring, compilation): "
                       f"{d['gauss_newton']['setup_s']:.2f} s; L-BFGS "
                       + ("reached the goal" if d["lbfgs"]["converged"]
                          else "stopped at its time budget (11× Gauss–Newton's time)")]}]


# ---------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------
def _col(tab, *names):
    """Index of the first column whose name contains one of ``names`` (case-insensitive)."""
    for name in names:
        for i, c in enumerate(tab["columns"]):
            if name.lower() in c.lower():
                return i
    raise KeyError(f"no column like {names} in {tab['columns']}")


def _positive(x):
    x = _num(x)
    return x if isinstance(x, float | int) and not isinstance(x, bool) and x > 0 else None


def grouped_bars(path, groups, series, values, title, ylabel, log=True):
    """Bars of ``values[(group, series)]``: one cluster per group holding the series it has,
    one color per series (legend on the right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    colors = {s: plt.get_cmap("tab10" if len(series) <= 10 else "tab20")(k)
              for k, s in enumerate(series)}
    widest = max(sum((g, s) in values for s in series) for g in groups)
    fig, ax = plt.subplots(figsize=(min(12.0, max(7.0, 3.0 + 0.35 * widest * len(groups))), 3.4))
    width = 0.8 / max(1, widest)
    labelled = set()
    for i, g in enumerate(groups):
        present = [s for s in series if (g, s) in values]
        for k, s in enumerate(present):
            x = i + (k - (len(present) - 1) / 2) * width
            ax.bar(x, values[(g, s)], width, color=colors[s],
                   label=None if s in labelled else s)
            labelled.add(s)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([textwrap.fill(g, 22) for g in groups], fontsize=8)
    if log:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def long_bars(path, tab, group_cols, series_col, value_col, title, ylabel, skip=()):
    gi = [_col(tab, c) for c in group_cols]
    si, vi = _col(tab, series_col), _col(tab, value_col)
    groups, series, values = [], [], {}
    for row in tab["rows"]:
        v = _positive(row[vi])
        s = str(row[si])
        if v is None or any(x in s for x in skip):
            continue
        g = " ".join(str(row[i]) for i in gi)
        groups += [g] if g not in groups else []
        series += [s] if s not in series else []
        values[(g, s)] = v
    if not values:
        raise ValueError(f"no positive numbers in column {tab['columns'][vi]!r}")
    grouped_bars(path, groups, series, values, title, ylabel)


def plot_detection(r, out):
    tab = r.tables[0]
    ci, ours, theirs = _col(tab, "case"), _col(tab, "t ours"), _col(tab, "t asdex")
    groups, values = [], {}
    for row in tab["rows"]:
        g = str(row[ci])
        groups.append(g)
        for s, i in (("sparseopt_adapters", ours), (f"asdex {VERSIONS['asdex']}", theirs)):
            if _positive(row[i]) is not None:
                values[(g, s)] = _positive(row[i])
    grouped_bars(out / "detection.png", groups, ["sparseopt_adapters",
                                                 f"asdex {VERSIONS['asdex']}"], values,
                 "Sparsity detection time (median)", "seconds (log)")
    return [("detection.png", "Detection time, ours vs asdex")]


def plot_compressed(r, out):
    """Per-call derivative time: ours, asdex, dense JAX and colors × one JVP, per case (the
    fixed-width table of bench_compressed.py); other layouts get a generic bar chart."""
    tab = r.tables[0]
    if all(c in tab["columns"] for c in ("ours", "asdex", "dense", "1 JVP", "colors")):
        i = {c: tab["columns"].index(c) for c in ("case", "ours", "asdex", "dense", "1 JVP",
                                                    "colors")}
        series = ["sparseopt_adapters", f"asdex {VERSIONS['asdex']}", "dense JAX",
                  "colors × 1 JVP"]
        groups, values = [], {}
        for row in tab["rows"]:
            g = str(row[i["case"]])
            groups.append(g)
            one, c = _seconds(row[i["1 JVP"]]), _num(row[i["colors"]])
            for s_, v in zip(series, (_seconds(row[i["ours"]]), _seconds(row[i["asdex"]]),
                                      _seconds(row[i["dense"]]),
                                      one * c if one and isinstance(c, float) else None),
                             strict=True):
                if v:
                    values[(g, s_)] = v
        grouped_bars(out / "compressed.png", groups, series, values,
                     "Per-call sparse derivative (jitted, median)", "seconds (log)")
        return [("compressed.png", "Per-call derivative time: ours vs asdex, dense JAX and "
                                   "colors × JVP")]
    plots = []
    for k, tab in enumerate(r.tables):
        name = f"compressed_{k}.png"
        cols = [c.lower() for c in tab["columns"]]
        time_cols = [i for i, c in enumerate(tab["columns"])
                     if re.search(r"\[(m|µ|u)?s\]|\bms\b|\btime\b|\bt\b|per call| s$", c.lower())
                     and c.lower() not in ("steps",)]
        method = next((i for i, c in enumerate(cols)
                       if any(w in c for w in ("method", "variant", "solver", "mode"))), None)
        if method is not None and time_cols:
            long_bars(out / name, tab, [tab["columns"][0]], tab["columns"][method],
                      tab["columns"][time_cols[0]], tab.get("title") or "Per-call derivative",
                      tab["columns"][time_cols[0]] + " (log)")
        elif time_cols:
            groups = [str(row[0]) for row in tab["rows"]]
            series = [tab["columns"][i] for i in time_cols]
            values = {(str(row[0]), tab["columns"][i]): _positive(row[i])
                      for row in tab["rows"] for i in time_cols if _positive(row[i])}
            if not values:
                continue
            grouped_bars(out / name, groups, series, values,
                         tab.get("title") or "Per-call derivative time", "time (log)")
        else:
            continue
        plots.append((name, tab.get("title") or "Per-call derivative time"))
    if not plots:
        raise ValueError("no table with a time column")
    return plots


def plot_ipopt(r, out):
    long_bars(out / "ipopt.png", r.tables[0], ["problem", "size"], "solver", "wall [s]",
              "IPOPT end to end: solve wall time (median)", "seconds (log)")
    return [("ipopt.png", "IPOPT solve time: ours vs CasADi, dense JAX and L-BFGS")]


def plot_scipy(r, out):
    long_bars(out / "scipy.png", r.tables[0], ["problem"], "variant", "wall",
              "scipy.optimize: ours vs scipy's derivative options", "seconds (log)",
              skip=("cold",))
    return [("scipy.png", "scipy trust-constr / least_squares solve time (warm)")]


def plot_optimistix(r, out):
    long_bars(out / "optimistix.png", r.tables[0], ["problem"], "solver", "median",
              "optimistix: ours vs optimistix's solvers (warm call)", "seconds (log)")
    return [("optimistix.png", "optimistix solve time (median of warm calls)")]


def plot_gauss_newton(r, out):
    long_bars(out / "gauss_newton.png", r.tables[0], ["Y, B", "nc"], "route", "solve s",
              "Gauss–Newton routes on the seed problem", "seconds (log)")
    return [("gauss_newton.png", "Gauss–Newton solve time per linear-solve route")]


def plot_seed(r, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = r.data
    e0 = d["gauss_newton"]["energy"][0]
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for key, label, style in (("gauss_newton", "Gauss–Newton (sparseopt_adapters)", "o-"),
                              ("lbfgs", "L-BFGS (scipy L-BFGS-B)", "-")):
        t = [max(x, 1e-4) for x in d[key]["t"]]
        e = [max(x / e0, 1e-30) for x in d[key]["energy"]]
        ax.plot(t, e, style, label=label, markersize=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("seconds after the one-off setup (log)")
    ax.set_ylabel("E / E0 (log)")
    ax.set_title(d["problem"], fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "seed_energy.png", dpi=80)
    plt.close(fig)
    return [("seed_energy.png", "Seed problem: energy against time, Gauss–Newton vs L-BFGS")]


EXPECTED = ("detection", "compressed", "ipopt", "scipy", "optimistix", "gauss_newton", "seed")
PLOTS = {"detection": plot_detection, "compressed": plot_compressed, "ipopt": plot_ipopt,
         "scipy": plot_scipy, "optimistix": plot_optimistix, "gauss_newton": plot_gauss_newton,
         "seed": plot_seed}

TITLES = {
    "detection": "Sparsity detection vs asdex",
    "compressed": "Per-call derivatives: colored vs asdex, dense JAX and colors × JVP",
    "ipopt": "IPOPT end to end vs CasADi, dense JAX and L-BFGS",
    "scipy": "scipy.optimize: sparse derivatives vs BFGS and finite differences",
    "optimistix": "optimistix: sparse solvers vs its dense default and matrix-free solvers",
    "gauss_newton": "Gauss–Newton routes on the seed problem",
    "seed": "Seed problem: Gauss–Newton vs L-BFGS, energy against time",
    "sharding": "Chunked and sharded compressed derivatives: memory and time per call",
}


# ---------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------
def fmt(c):
    if c is None:
        return ""
    if isinstance(c, bool):
        return str(c)
    if isinstance(c, int):
        return str(c)
    if isinstance(c, float):
        if math.isnan(c):
            return ""
        if c != 0 and (abs(c) < 1e-3 or abs(c) >= 1e5):
            return f"{c:.2e}"
        return f"{c:.4g}" if abs(c) < 100 else f"{c:.0f}"
    return str(c).replace("|", "\\|").replace("\n", " ")


def md_table(tab):
    lines = []
    if tab.get("title"):
        lines += [f"**{tab['title']}**", ""]
    lines.append("| " + " | ".join(fmt(c) for c in tab["columns"]) + " |")
    lines.append("|" + "|".join("---" for _ in tab["columns"]) + "|")
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in tab["rows"]]
    for n in tab.get("notes", []):
        lines += ["", f"- {n}"]
    return "\n".join(lines)


def _tail(text, n=25):
    lines = text.rstrip().splitlines()
    return "\n".join(lines[-n:])


def _order(name):
    return (EXPECTED.index(name) if name in EXPECTED else len(EXPECTED), name)


def write_markdown(runs, mode, meta, out, img_prefix=""):
    runs = sorted(runs, key=lambda r: _order(r.name))
    lines = [
        f"# Benchmark results ({mode})",
        "",
        f"Generated by `python benchmarks/run.py --{mode}` on {meta['started']} "
        f"({meta['machine']}, Python {meta['python']}, load average "
        f"{meta['load_before']:.1f} before and {meta['load_after']:.1f} after: other work on "
        f"the machine slows every number); total {meta['total']:.0f} s. Every script ran with "
        "`OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1`; times are medians of repeated runs after "
        "a warm-up unless a table says otherwise, and every ratio is measured within one run.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "## Summary",
        "",
        "| benchmark | command | status | wall [s] | cpu [s] | tables | plots |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(f"| [{r.name}](#{r.name}) | `{' '.join(r.cmd)}` | "
                     f"{r.status} | {r.wall:.0f} | {r.cpu:.0f} | {len(r.tables)} | "
                     f"{len(r.plots)} |")
    if not meta.get("only"):  # a comparison the suite promises but no script delivers
        for n in EXPECTED:
            if n not in {r.name for r in runs}:
                lines.append(f"| {n} | `benchmarks/bench_{n}.py` | **MISSING**: no such script "
                             "| | | 0 | 0 |")
    wall, cpu = sum(r.wall for r in runs), sum(r.cpu for r in runs)
    lines += ["", f"Total: {wall:.0f} s wall, {cpu:.0f} s CPU (user + system of each script: "
              "roughly its wall time on an otherwise idle "
              "machine, more where JAX uses both cores)."]
    failed = [r for r in runs if not r.ok or r.problems]
    if failed:
        lines += ["", "Failures, skips and problems (the full output is under each benchmark):",
                  ""]
        for r in failed:
            lines.append(f"- **{r.name}**: {r.status}" +
                         ("; " + "; ".join(r.problems) if r.problems else ""))
    for r in runs:
        lines += ["", f"## {r.name}", "", f"*{TITLES.get(r.name, r.name)}* — "
                  f"`{' '.join(r.cmd)}`: {r.status}, {r.wall:.0f} s.", ""]
        if not r.ok and not r.skipped:
            lines += ["The end of its error output:", "", "```text",
                      _tail(r.stderr or r.stdout) or "(nothing)", "```", ""]
        for tab in r.tables:
            lines += [md_table(tab), ""]
        for name, caption in r.plots:
            lines += [f"![{caption}]({img_prefix}{name})", ""]
        if r.stdout.strip():
            lines += ['<details markdown="1"><summary>Full output</summary>', "", "```text",
                      r.stdout.rstrip(), "```", "", "</details>", ""]
    (out / "README.md").write_text("\n".join(lines).rstrip() + "\n")


def write_docs(runs, mode, meta, out):
    """docs/benchmarks.md and docs/img/benchmarks/*.png from these results."""
    img = ROOT / "docs" / "img" / "benchmarks"
    if img.exists():
        shutil.rmtree(img)
    img.mkdir(parents=True)
    for r in runs:
        for name, _ in r.plots:
            shutil.copy(out / name, img / name)
    write_markdown(runs, mode, meta, out, img_prefix="img/benchmarks/")
    text = (out / "README.md").read_text()
    (out / "README.md").unlink()
    intro = (
        "<!-- Generated by `python benchmarks/run.py --quick --docs`; do not edit by hand. -->\n"
        + text.replace(f"# Benchmark results ({mode})", "# Benchmarks", 1).replace(
            "## Summary",
            "Reproduce with `python benchmarks/run.py --quick` (or `--full` for the larger "
            "sizes); the results land in `benchmarks/results/`.\n\n## Summary", 1)
    )
    (ROOT / "docs" / "benchmarks.md").write_text(intro)
    write_markdown(runs, mode, meta, out)


def process(r: Run, out) -> Run:
    """Read a finished run's tables and draw its plots; what goes wrong goes to ``problems``."""
    r.problems = [p for p in r.problems if p.startswith("its --json")]
    r.tables, r.plots = [], []
    try:
        r.tables = collect_tables(r)
    except Exception as e:  # reported, never hidden
        r.problems.append(f"could not read its tables: {type(e).__name__}: {e}")
    if r.ok and not r.tables:
        r.problems.append("printed no table")
    if r.tables and r.name in PLOTS:
        try:
            r.plots = PLOTS[r.name](r, out)
        except Exception as e:
            r.problems.append(f"plot failed: {type(e).__name__}: {e}")
    return r


RAW = ("name", "cmd", "rc", "wall", "cpu", "timed_out", "skipped", "stdout", "stderr", "data",
       "problems")


def _load_avg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def save_raw(path, runs, meta):
    path.write_text(json.dumps({"meta": meta, "runs": [{k: getattr(r, k) for k in RAW}
                                                       for r in runs]}, indent=1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = ap.add_mutually_exclusive_group(required=True)
    size.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    size.add_argument("--full", action="store_true", help="the scripts' full sizes")
    ap.add_argument("--only", default=None,
                    help="comma-separated benchmark names (detection, ipopt, ..., seed)")
    ap.add_argument("--skip", default=None,
                    help="comma-separated benchmark names not to run (listed as skipped)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds per script (default 240 quick, 3600 full)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results/MODE)")
    ap.add_argument("--docs", action="store_true",
                    help="also write docs/benchmarks.md and docs/img/benchmarks/")
    ap.add_argument("--render", action="store_true",
                    help="run nothing: redo the tables, plots (and --docs) from the raw output "
                         "of the last run (runs.json in the results folder)")
    a = ap.parse_args(argv)
    mode = "quick" if a.quick else "full"
    out = pathlib.Path(a.out) if a.out else HERE / "results" / mode
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "runs.json"
    for old in out.glob("*.png"):
        old.unlink()
    if a.render:
        if not raw.exists():
            raise SystemExit(f"--render: no {raw}; run the benchmarks first.")
        saved = json.loads(raw.read_text())
        meta = saved["meta"]
        runs = [process(Run(**d), out) for d in saved["runs"]]
    else:
        timeout = a.timeout or TIMEOUT[mode]
        meta = {"started": f"{datetime.datetime.now():%Y-%m-%d %H:%M}",
                "machine": f"{platform.processor() or platform.machine()}, "
                           f"{os.cpu_count()} cores",
                "python": platform.python_version(), "versions": VERSIONS,
                "load_before": _load_avg(), "load_after": float("nan"), "total": 0.0,
                "only": a.only}
        t0 = time.perf_counter()
        runs = []
        with tempfile.TemporaryDirectory(prefix="sparseopt_bench_") as tmp:
            skip = set(a.skip.split(",")) if a.skip else set()
            for name, script in discover(a.only.split(",") if a.only else None):
                if name in skip:
                    runs.append(Run(name, ["python", os.path.relpath(script, ROOT)],
                                    skipped=True))
                    print(f"[run.py] {name}: skipped (--skip)", flush=True)
                    continue
                print(f"[run.py] {name}: {os.path.relpath(script, ROOT)} ...", flush=True)
                r = process(run_script(name, script, mode, pathlib.Path(tmp), timeout), out)
                runs.append(r)
                meta.update(total=time.perf_counter() - t0, load_after=_load_avg())
                save_raw(raw, runs, meta)  # kept as it goes: --render can redo the rest
                print(f"[run.py] {name}: {r.status.replace('*', '')} in {r.wall:.0f} s "
                      f"({r.cpu:.0f} s CPU)"
                      + (f" ({'; '.join(r.problems)})" if r.problems else ""), flush=True)
                if not r.ok:
                    print(_tail(r.stderr or r.stdout, 10), flush=True)
    write_markdown(runs, mode, meta, out)
    if a.docs:
        write_docs(runs, mode, meta, out)
    print(f"[run.py] total {meta['total']:.0f} s; wrote {out / 'README.md'}"
          + (" and docs/benchmarks.md" if a.docs else ""))
    bad = [r.name for r in runs if not r.ok and not r.skipped]
    if bad:
        print(f"[run.py] FAILED: {', '.join(bad)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
