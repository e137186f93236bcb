"""Compressed sparse derivatives: colors and per-call time vs asdex, dense JAX and colors × JVP.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_compressed.py [--quick]

Per-call times are medians of jitted calls after a warm-up (compile excluded), measured in one
run for every method. Ratios: ours / asdex (< 1 means faster) and ours / (colors × one JVP or
HVP of the same function). Dense JAX (jacfwd / hessian) is skipped where n² floats exceed
~400 MB and says so.
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
import numpy as np  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402

from _problems import (  # noqa: E402  isort: skip
    banded_residual, bratu_residual, rosenbrock, seed_problem, seed_residual_scatter,
)

DENSE_LIMIT = 1.1e8  # entries of a dense derivative (880 MB)
DENSE_TIME_LIMIT = 10.0  # s: a dense call slower than this is timed once (warm-up excluded)


def per_call(fn, x, repeats, warm=True):
    if warm:
        jax.block_until_ready(fn(x))  # warm-up (compile)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def fmt(t):
    return "-" if t is None else (f"{t * 1e6:.0f}µs" if t < 1e-3 else f"{t * 1e3:.2f}ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    import asdex

    rng = np.random.default_rng(0)
    cases = []
    for n in ([10_000] if a.quick else [10_000, 100_000]):
        cases.append((f"Rosenbrock Hessian n={n:.0e}", "hess", rosenbrock, rng.normal(size=n)))
    for N in ([100] if a.quick else [100, 300]):
        cases.append((f"Bratu Jacobian N={N}", "jac", bratu_residual(N),
                      0.1 * rng.normal(size=N * N)))
    # --quick: p = 400; at p = 1000 dense jacfwd carries a (nnz, p, q) tangent of G (~5 GB)
    sp, sq = (400, 80) if a.quick else (1000, 200)
    gi, gj, L, Y, B, X, g0 = seed_problem(sp, sq, selection=True)
    cases.append((f"seed Y·GᵀLG·B (selection) p={sp}", "jac",
                  seed_residual_scatter(gi, gj, L, Y, B, X, sp, sq), g0))

    print(f"jax {jax.__version__}, asdex 0.5.1; median of {a.repeats} jitted calls after "
          "a warm-up\n")
    cols = ("colors", "asdex col", "ours", "asdex", "dense", "1 JVP", "ours/asdex", "ours/(c·JVP)")
    print(f"{'case':36s} " + " ".join(f"{c:>12s}" for c in cols))
    for name, kind, f, x0 in cases:
        x = jnp.asarray(x0)
        n = x.size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "hess":
                ours = sa.sparse_hessian(f, x)
                theirs_col = asdex.hessian_coloring(f, x)
                theirs = jax.jit(asdex.hessian_from_coloring(f, theirs_col))
                dense = jax.jit(jax.hessian(f)) if n * n <= DENSE_LIMIT else None
                v = jnp.ones_like(x)
                one = jax.jit(lambda z, f=f, v=v: jax.jvp(jax.grad(f), (z,), (v,))[1])
            else:
                ours = sa.sparse_jacobian(f, x)
                theirs_col = asdex.jacobian_coloring(f, x)
                theirs = jax.jit(asdex.jacobian_from_coloring(f, theirs_col))
                m = jax.eval_shape(f, x).shape[0]
                dense = jax.jit(jax.jacfwd(f)) if m * n <= DENSE_LIMIT else None
                v = jnp.ones_like(x)
                one = jax.jit(lambda z, f=f, v=v: jax.jvp(f, (z,), (v,))[1])
        ours_fn = jax.jit(ours.values)
        # correctness of what is timed: same values as asdex on our pattern
        J_ours = np.asarray(ours(x).todense())
        J_them = np.asarray(theirs(x).todense())
        assert np.allclose(J_ours, J_them, rtol=1e-10, atol=1e-12), name
        t_ours = per_call(ours_fn, x, a.repeats)
        t_them = per_call(theirs, x, a.repeats)
        t_dense = None
        if dense is not None:
            t = time.perf_counter()
            jax.block_until_ready(dense(x))
            slow = time.perf_counter() - t > DENSE_TIME_LIMIT
            t_dense = per_call(dense, x, 1 if slow else 3, warm=False)
        t_one = per_call(one, x, a.repeats)
        c = ours.n_colors
        row = (f"{c}", f"{theirs_col.num_colors}", fmt(t_ours), fmt(t_them), fmt(t_dense)
               if dense is not None else "skipped", fmt(t_one), f"{t_ours / t_them:.2f}",
               f"{t_ours / (c * t_one):.2f}")
        print(f"{name:36s} " + " ".join(f"{s:>12s}" for s in row))

    n = 1_000_000
    x = jax.ShapeDtypeStruct((n,), jnp.float64)
    p = sa.jacobian_sparsity(banded_residual, x)
    t = time.perf_counter()
    col = sa.color_jacobian(p)
    print(f"\ncoloring a 1e6-column banded pattern (nnz={p.nnz}): {time.perf_counter() - t:.2f}s, "
          f"{col.n_colors} colors (goal < 2 s)")


if __name__ == "__main__":
    main()
