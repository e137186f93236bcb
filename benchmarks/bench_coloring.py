"""Graph coloring: sparseopt_adapters (numba kernels) vs asdex 0.5.1, side by side in one run.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_coloring.py [--quick] [--json PATH]

Per pattern: colours and time of ours ("auto" and one fixed mode) and of asdex's default
colouring of the same pattern (star for Hessians, column/row for Jacobians), nonzeros per
second, and the ratio ours / asdex (< 1 means we are faster). Timings are medians of repeated
colourings after a warm-up call (the kernels are compiled or loaded then). The patterns are
built with numpy (tests/_coloring/patterns.py), so detection is not part of the time.

Then the cold first call in a fresh process, with the on-disk numba cache and without it
(an empty ``NUMBA_CACHE_DIR``): import of the package plus the first colouring of the BRYBND
Hessian, next to the warm time. Goals (issue 14): the BRYBND and torsion Hessian colourings
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


def timed(fn, repeats):
    """Median of ``repeats`` calls after a warm-up call."""
    out = fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def cases(quick):
    n, side, nh, grid = (2000, 40, 200, 150) if quick else (10_000, 102, 1000, 600)
    return [
        (f"BRYBND-type Hessian n={n}", "hess", brybnd_hessian(n), "star"),
        (f"COPS torsion Hessian {side}x{side}", "hess", torsion_hessian(side, side), "star"),
        (f"COPS steering Jacobian nh={nh}", "jac", steering_jacobian(nh), "forward"),
        (f"2-D 5-point stencil {grid}x{grid} (Hessian)", "hess", stencil(grid, grid), "star"),
        (f"2-D 5-point stencil {grid}x{grid} (Jacobian)", "jac", stencil(grid, grid),
         "forward"),
    ]


COLD = """
import time
t = time.perf_counter()
import sys
sys.path.insert(0, {patterns!r})
import sparseopt_adapters as sa
from patterns import brybnd_hessian
p = brybnd_hessian({n})
t1 = time.perf_counter()
c = sa.color_hessian(p)
t2 = time.perf_counter()
c = sa.color_hessian(p)
t3 = time.perf_counter()
print(t1 - t, t2 - t1, t3 - t2, c.n_colors)
from sparseopt_adapters._coloring import _kernels
if hasattr(_kernels._WARMING, "wait"):
    _kernels._WARMING.wait()  # the background compiler fills the cache for the next run
"""


def cold_runs(n):
    """(label, import s, first colouring s, second colouring s) in fresh processes."""
    code = COLD.format(patterns=str(ROOT / "tests" / "_coloring"), n=n)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = []
    with tempfile.TemporaryDirectory() as empty:
        for label, extra in (("empty disk cache (compiles in the background)",
                              {"NUMBA_CACHE_DIR": empty}),
                             ("disk cache filled by the run above", {"NUMBA_CACHE_DIR": empty}),
                             ("default cache location", {})):
            r = subprocess.run([sys.executable, "-c", code], env={**env, **extra},
                               capture_output=True, text=True, timeout=900)
            if r.returncode:
                out.append((label, None, None, None, r.stderr.strip().splitlines()[-1]))
                continue
            t_imp, t_first, t_second, k = r.stdout.split()
            out.append((label, float(t_imp), float(t_first), float(t_second), f"{k} colors"))
    return out


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
    cols = ("case", "nnz", "ours auto", "t auto", "ours fixed", "t fixed", "asdex", "t asdex",
            "auto/asdex", "fixed/asdex", "Mnnz/s auto")
    print(" | ".join(cols))
    print("|".join("---" for _ in cols))
    for name, kind, p, fixed in cases(a.quick):
        ap_ = asdex.SparsityPattern.from_coo(p.rows, p.cols, p.shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "hess":
                auto, t_auto = timed(lambda: sa.color_hessian(p), repeats)  # noqa: B023
                fix, t_fix = timed(lambda: sa.color_hessian(p, method=fixed), repeats)  # noqa: B023
                them, t_them = timed(lambda: asdex.hessian_coloring_from_sparsity(ap_),  # noqa: B023
                                     repeats)
            else:
                auto, t_auto = timed(lambda: sa.color_jacobian(p), repeats)  # noqa: B023
                fix, t_fix = timed(lambda: sa.color_jacobian(p, mode=fixed), repeats)  # noqa: B023
                them, t_them = timed(lambda: asdex.jacobian_coloring_from_sparsity(ap_),  # noqa: B023
                                     repeats)
        row = (name, p.nnz, f"{auto.n_colors} {auto.mode}", t_auto, f"{fix.n_colors} {fix.mode}",
               t_fix, f"{them.num_colors}", t_them, t_auto / t_them, t_fix / t_them,
               p.nnz / t_auto / 1e6)
        rows.append((row[0], peer) + row[1:])
        print(" | ".join(f"{c:.4g}" if isinstance(c, float) else str(c) for c in row))
    tables = [table(f"Coloring time per pattern vs asdex (median of {repeats} after a warm-up; "
                    "ratio < 1: ours faster)",
                    ("case", "peer", "nnz", "ours auto", "t auto [s]", "ours fixed",
                     "t fixed [s]", "asdex colors", "t asdex [s]", "auto / asdex",
                     "fixed / asdex", "Mnnz/s auto"), rows,
                    notes=["SMC (Julia) on a 1.77e6-nnz matrix: 0.42 s column, 0.57 s star, "
                           "0.68 s acyclic (PITFALLS.md)."])]
    if not a.no_cold:
        n = 2000 if a.quick else 10_000
        cold = cold_runs(n)
        print(f"\nFresh process, BRYBND-type Hessian n={n}: import s, first colour s, second s")
        for r in cold:
            print(" | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in r))
        tables.append(table(f"Cold first call in a fresh process (BRYBND-type Hessian n={n})",
                            ("numba cache", "peer", "import [s]", "first coloring [s]",
                             "second coloring [s]", "result"),
                            [(r[0], "-") + tuple(r[1:]) for r in cold]))
    write_json(a.json, "coloring", tables, versions={"asdex": peer.split()[-1]})


if __name__ == "__main__":
    main()
