"""Sparsity detection: sparseopt_adapters vs asdex, side by side in one run.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_detection.py [--quick]

Prints nonzeros found by each and the time ratio (asdex / ours; > 1 means we are faster).
Each timing is the median of repeated detections after a warm-up detection.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402

from _problems import (  # noqa: E402  isort: skip
    banded_residual, bratu_residual, rosenbrock, seed_problem, seed_residual_scatter,
)
from _report import add_json_argument, table, write_json  # noqa: E402  isort: skip


def timed(fn, repeats, slow=None):
    """Median of ``repeats`` timed calls after a warm-up; one timed call when the warm-up took
    longer than ``slow`` seconds (``--quick``)."""
    t = time.perf_counter()
    fn()  # warm-up
    if slow is not None and time.perf_counter() - t > slow:
        repeats = 1
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true", help="time ours only (skip asdex)")
    add_json_argument(ap)
    a = ap.parse_args()
    try:
        if a.no_peer:
            raise ImportError("--no-peer")
        import asdex
    except Exception as e:  # asdex 0.5.2 does not import on JAX 0.12; report, never hide
        asdex = None
        print(f"asdex unavailable here ({type(e).__name__}: {e}); timing ours only\n")

    cases = []
    for n in ([10_000] if a.quick else [10_000, 100_000]):
        x = jax.ShapeDtypeStruct((n,), jnp.float64)
        cases.append((f"Rosenbrock Hessian n={n:.0e}", "hess", rosenbrock, x))
    for N in ([100] if a.quick else [100, 300]):
        x = jax.ShapeDtypeStruct((N * N,), jnp.float64)
        cases.append((f"Bratu Jacobian N={N}", "jac", bratu_residual(N), x))
    p, q = (1000, 200)
    gi, gj, L, Y, B, X, g0 = seed_problem(p, q, selection=True)
    f_seed = seed_residual_scatter(gi, gj, L, Y, B, X, p, q)
    cases.append((f"seed Y·GᵀLG·B p={p} q={q} (selection)", "jac", f_seed,
                  jax.ShapeDtypeStruct(g0.shape, jnp.float64)))

    asdex_version = ("unavailable" if asdex is None
                     else getattr(asdex, "__version__", "0.5.1"))
    print(f"asdex {asdex_version}, "
          f"jax {jax.__version__}; median of {a.repeats} after a warm-up\n")
    json_rows = []
    slow = 5.0 if a.quick else None
    if a.quick:
        print("--quick: a detection whose warm-up takes over 5 s is timed once\n")
    cols = ("nnz ours", "nnz asdex", "t ours", "t asdex", "speed-up")
    header = f"{'case':42s} " + " ".join(f"{c:>10s}" for c in cols)
    print(header)
    print("-" * len(header))
    for name, kind, f, x in cases:
        ours_fn = sa.hessian_sparsity if kind == "hess" else sa.jacobian_sparsity
        their_fn = None if asdex is None else (
            asdex.hessian_sparsity if kind == "hess" else asdex.jacobian_sparsity)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_ours, t_ours = timed(lambda: ours_fn(f, x), a.repeats, slow)  # noqa: B023
            try:
                if asdex is None:
                    raise ImportError("asdex unavailable")
                xa = jnp.ones(x.shape, x.dtype)  # asdex needs a concrete sample
                p_them, t_them = timed(lambda: their_fn(f, xa), a.repeats, slow)  # noqa: B023
                nnz_them, t_them_s = f"{p_them.nnz}", f"{t_them:.3f}s"
                ratio = f"{t_them / t_ours:.1f}×"
            except Exception as e:  # report, never hide
                nnz_them, t_them_s, ratio = "error", type(e).__name__, "-"
        row = (f"{p_ours.nnz}", nnz_them, f"{t_ours:.3f}s", t_them_s, ratio)
        ok = nnz_them != "error"
        json_rows.append((name, f"asdex {asdex_version}", p_ours.nnz,
                          p_them.nnz if ok else None, t_ours, t_them if ok else None,
                          t_them / t_ours if ok else None, "" if ok else t_them_s))
        print(f"{name:42s} " + " ".join(f"{c:>10s}" for c in row))

    n = 1_000_000
    x = jax.ShapeDtypeStruct((n,), jnp.float64)
    t = time.perf_counter()
    p_big = sa.jacobian_sparsity(banded_residual, x)
    t_big = time.perf_counter() - t
    print(f"\n1e6-variable banded Jacobian (ours only, first call incl. tracing): "
          f"nnz={p_big.nnz}, {t_big:.2f}s (goal < 10 s)")
    t = time.perf_counter()
    h_big = sa.hessian_sparsity(rosenbrock, x)
    t_h = time.perf_counter() - t
    print(f"1e6-variable Rosenbrock Hessian (ours only): nnz={h_big.nnz}, {t_h:.2f}s")
    write_json(a.json, "detection", [
        table(f"Sparsity detection vs asdex (median of {a.repeats} after a warm-up"
              + ("; timed once where the warm-up took over 5 s)" if a.quick else ")"),
              ("case", "peer", "nnz ours", "nnz asdex", "t ours [s]", "t asdex [s]",
               "speed-up (asdex / ours)", "note"), json_rows),
        table("1e6 variables, ours only (first call, tracing included)",
              ("case", "peer", "nnz", "t [s]", "goal"),
              [("banded Jacobian n=1e6", "-", p_big.nnz, t_big, "< 10 s"),
               ("Rosenbrock Hessian n=1e6", "-", h_big.nnz, t_h, "")]),
    ], versions={"jax": jax.__version__, "asdex": asdex_version})


if __name__ == "__main__":
    main()
