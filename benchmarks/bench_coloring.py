"""Graph coloring: sparseopt_adapters (numba kernels) vs asdex 0.5.1, side by side in one run.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_coloring.py [--quick] [--json PATH]

Per pattern: colours and time of ours ("auto", plus star and acyclic for Hessians, forward
and reverse for Jacobians) and of asdex's default colouring of the same pattern, nonzeros
per second, and the ratio ours / asdex (< 1 means we are faster). Timings are medians of
interleaved rounds (every variant once per round, so that the load of a shared machine hits
all alike) after a warm-up call (the kernels are loaded then). The patterns are built with
numpy (tests/_coloring/patterns.py), so detection is not part of the time.

Then the first colouring in a fresh process (warm numba disk cache), per pattern size: with
the Python kernels, with numba (import numba + load each kernel + run), the warm numba call,
and what the default policy does (``_kernels.COLD_NNZ``, decided from this table).
Goals (issue 14): the BRYBND and torsion Hessian colourings
at most 1.0× asdex with no more colours (aim: 50 ms). Reference for the stencil: SMC colours
a 1.77e6-nnz matrix in 0.42 s (column), 0.57 s (star), 0.68 s (acyclic).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "_coloring"))

import sparseopt_adapters as sa  # noqa: E402
from sparseopt_adapters._coloring import backend  # noqa: E402

from _report import add_json_argument, table, write_json, version  # noqa: E402  isort: skip
from patterns import (  # noqa: E402  isort: skip
    brybnd_hessian, steering_jacobian, stencil, torsion_hessian,
)


def interleaved(fns, repeats):
    """``{name: (result, median seconds)}``: one warm-up call each, then ``repeats`` rounds
    calling every function once, so that the load of the (shared) machine hits all alike."""
    out = {k: f() for k, f in fns.items()}
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            out[k] = f()
            times[k].append(time.perf_counter() - t)
    return {k: (out[k], statistics.median(times[k])) for k in fns}


def cases(quick):
    n, side, nh, grid = (2000, 40, 200, 150) if quick else (10_000, 102, 1000, 600)
    return [
        (f"BRYBND-type Hessian n={n}", "hess", brybnd_hessian(n)),
        (f"COPS torsion Hessian {side}x{side}", "hess", torsion_hessian(side, side)),
        (f"COPS steering Jacobian nh={nh}", "jac", steering_jacobian(nh)),
        (f"2-D 5-point stencil {grid}x{grid} (Hessian)", "hess", stencil(grid, grid)),
        (f"2-D 5-point stencil {grid}x{grid} (Jacobian)", "jac", stencil(grid, grid)),
    ]


FRESH = """
import json, sys, time
sys.path.insert(0, {patterns!r})
import sparseopt_adapters as sa
import patterns
what, kind, arg = sys.argv[1:4]
if kind == "file":
    p = sa.SparsityPattern.load(arg)
else:
    p = getattr(patterns, kind)(*[int(a) for a in arg.split(",")])
color = sa.color_hessian if what == "hess" else sa.color_jacobian
t0 = time.perf_counter()
c = color(p, warn=False)
t1 = time.perf_counter()
numba_first = "numba" in sys.modules  # (the second call may load it: COLD_NNZ counts both)
c = color(p, warn=False)
t2 = time.perf_counter()
print(json.dumps(dict(first=t1 - t0, second=t2 - t1, colors=c.n_colors, mode=c.mode,
                      numba=numba_first)))
from sparseopt_adapters._coloring import _kernels
if hasattr(_kernels._WARMING, "wait"):
    _kernels._WARMING.wait()  # a background compiler fills the cache for the next run
"""


def fresh(what, kind, arg, env_extra):
    """The first and second colouring of one pattern in a fresh process (dict)."""
    code = FRESH.format(patterns=str(ROOT / "tests" / "_coloring"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    r = subprocess.run([sys.executable, "-c", code, what, kind, arg], env=env, capture_output=True,
                       text=True, timeout=900)
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1])
    import json

    return json.loads(r.stdout.strip().splitlines()[-1])


def main_example_pattern(nc, folder):
    """The Jacobian pattern of ``examples/sparse_operator_fit.py`` (detected once, saved)."""
    path = pathlib.Path(folder) / f"main_example_nc{nc}.npz"
    if not path.exists():
        import jax
        import jax.numpy as jnp

        jax.config.update("jax_enable_x64", True)
        sys.path.insert(0, str(ROOT / "examples"))
        from sparse_operator_fit import make_problem

        residual, G0, targets, _ = make_problem(nc)
        sa.jacobian_sparsity(lambda G: jnp.concatenate(residual(G, targets)), G0).save(path)
    return str(path)


def cold_table(quick, folder):
    """Per pattern size: the first colouring in a fresh process with the Python kernels,
    with numba (warm disk cache: import numba + load each kernel + run), and the warm
    numba call. The rows decide ``_kernels.COLD_NNZ``."""
    from sparseopt_adapters._coloring import _kernels

    if not _kernels.available():
        return []
    bry = (1000, 5000) if quick else (250, 1000, 2500, 5000, 10_000, 20_000)
    grid = (30, 70) if quick else (20, 45, 70, 100, 150, 220)
    specs = [(f"BRYBND Hessian n={n}", "hess", "brybnd_hessian", str(n)) for n in bry]
    specs += [(f"5-point Jacobian {g}x{g}", "jac", "stencil", f"{g},{g}") for g in grid]
    for nc in ((12,) if quick else (12, 20, 28)):
        specs.append((f"main example J, nc={nc}", "jac", "file",
                      main_example_pattern(nc, folder)))
    rows = []
    for label, what, kind, arg in specs:
        fresh(what, kind, arg, {"SPARSEOPT_ADAPTERS_COLORING": "numba"})  # warm disk cache
        py = fresh(what, kind, arg, {"SPARSEOPT_ADAPTERS_COLORING": "python"})
        nb = fresh(what, kind, arg, {"SPARSEOPT_ADAPTERS_COLORING": "numba"})
        auto = fresh(what, kind, arg, {"SPARSEOPT_ADAPTERS_COLORING": "auto"})
        nnz = _nnz(what, kind, arg)
        rows.append((label, nnz, py["first"], nb["first"], nb["second"], auto["first"],
                     "numba" if auto["numba"] else "python", f"{nb['colors']} {nb['mode']}",
                     py["colors"] == nb["colors"]))
    return rows


def _nnz(what, kind, arg):
    import patterns

    if kind == "file":
        p = sa.SparsityPattern.load(arg)
    else:
        p = getattr(patterns, kind)(*[int(a) for a in arg.split(",")])
    return p.symmetrize().nnz if what == "hess" else p.nnz


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller patterns, fewer repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--no-cold", action="store_true", help="skip the fresh-process runs")
    add_json_argument(ap)
    a = ap.parse_args()
    repeats = a.repeats or (3 if a.quick else 7)
    import asdex

    from sparseopt_adapters._coloring import _kernels

    kernels = _kernels._compiled()
    if kernels:
        kernels.warm_up()  # steady state: every kernel compiled or loaded before timing
    peer = version("asdex")
    print(f"{peer}; ours: {backend()} kernels; median of {repeats} after a warm-up; "
          "single-threaded BLAS\n")
    rows = []
    cols = ("case", "nnz", "asdex", "t asdex [ms]", "ours auto", "t auto [ms]", "auto / asdex",
            "ours 2", "t 2 [ms]", "2 / asdex", "ours 3", "t 3 [ms]", "3 / asdex",
            "Mnnz/s auto")
    print(" | ".join(cols))
    print("|".join("---" for _ in cols))
    for name, kind, p in cases(a.quick):
        ap_ = asdex.SparsityPattern.from_coo(p.rows, p.cols, p.shape)
        if kind == "hess":
            fns = {"asdex": lambda: asdex.hessian_coloring_from_sparsity(ap_),  # noqa: B023
                   "auto": lambda: sa.color_hessian(p),  # noqa: B023
                   "star": lambda: sa.color_hessian(p, method="star"),  # noqa: B023
                   "acyclic": lambda: sa.color_hessian(p, method="acyclic")}  # noqa: B023
        else:
            fns = {"asdex": lambda: asdex.jacobian_coloring_from_sparsity(ap_),  # noqa: B023
                   "auto": lambda: sa.color_jacobian(p),  # noqa: B023
                   "forward": lambda: sa.color_jacobian(p, mode="forward"),  # noqa: B023
                   "reverse": lambda: sa.color_jacobian(p, mode="reverse")}  # noqa: B023
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = interleaved(fns, repeats)
        them, t_them = res.pop("asdex")
        row = [name, p.nnz, f"{them.num_colors}", 1e3 * t_them]
        for c, t in res.values():
            row += [f"{c.n_colors} {c.mode}", 1e3 * t, t / t_them]
        row.append(p.nnz / res["auto"][1] / 1e6)
        rows.append((row[0], peer) + tuple(row[1:]))
        print(" | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in row))
    tables = [table(f"Coloring time per pattern vs asdex (interleaved, median of {repeats} "
                    "after a warm-up; ratio < 1: ours faster). Hessians: 2 = star, "
                    "3 = acyclic; Jacobians: 2 = forward, 3 = reverse",
                    (cols[0], "peer") + cols[1:], rows,
                    notes=["SMC (Julia) on a 1.77e6-nnz matrix: 0.42 s column, 0.57 s star, "
                           "0.68 s acyclic (PITFALLS.md)."])]
    if not a.no_cold:
        from sparseopt_adapters._coloring import _kernels

        with tempfile.TemporaryDirectory() as folder:
            cold = cold_table(a.quick, folder)
        cols = ("pattern", "nnz", "python 1st [s]", "numba cold 1st [s]", "numba warm [s]",
                "auto 1st [s]", "auto used", "colors", "same colors")
        print(f"\nFirst colouring in a fresh process (warm numba disk cache); COLD_NNZ = "
              f"{_kernels.COLD_NNZ}")
        print(" | ".join(cols))
        print("|".join("---" for _ in cols))
        for r in cold:
            print(" | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in r))
        tables.append(table("First colouring in a fresh process (warm numba disk cache): "
                            "Python kernels vs numba cold start vs numba warm",
                            ("pattern", "peer") + cols[1:],
                            [(r[0], "-") + tuple(r[1:]) for r in cold],
                            notes=[f"_kernels.COLD_NNZ = {_kernels.COLD_NNZ}: below it the "
                                   "first call in a process uses the Python kernels."]))
    write_json(a.json, "coloring", tables, versions={"asdex": peer.split()[-1]})


if __name__ == "__main__":
    main()
