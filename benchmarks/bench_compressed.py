"""Compressed sparse derivatives: colors and per-call time vs asdex, dense JAX and colors × JVP.

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_compressed.py [--quick] [--no-dense]

Per-call times are medians (and minima) of jitted calls after a warm-up (compile excluded),
the methods interleaved call by call so that load on a shared machine hits them alike.
Ratios: ours / asdex (< 1 means faster) and ours / (colors × one JVP or HVP of the same
function). The products (``obj.compressed``) and the decompression (a jitted gather from
precomputed products) are also timed on their own, and the XLA compilations of the first call
are counted and timed. Dense JAX (jacfwd / hessian) is skipped where n² floats exceed
~880 MB and says so. Goals (issue 14 item 5): ours/asdex <= 1.0 where the colour counts are
equal, ours/(c·1) <= 1.2 on the Rosenbrock n=1e5 Hessian, the BRYBND-type n=1e4 Jacobian and
the NONDQUAR-type n=1e4 Hessian. ``--hvp-variants`` times the ways of taking the Rosenbrock
Hessian's products (vmap with seeds built in the graph or passed in, linearize + vmap,
fori_loop / scan over colours, rev_over_fwd, rev_over_rev) against one HVP.
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
import scipy.sparse  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402
from sparseopt_adapters._compressed import _decompress  # noqa: E402

from _problems import (  # noqa: E402  isort: skip
    banded_residual, bratu_residual, rosenbrock, seed_problem, seed_residual_scatter,
)

DENSE_LIMIT = 1.1e8  # entries of a dense derivative (880 MB)
DENSE_TIME_LIMIT = 10.0  # s: a dense call slower than this is timed once (warm-up excluded)

_COMPILES = []


def _on_event(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES.append(duration)


jax.monitoring.register_event_duration_secs_listener(_on_event)


def brybnd_residual(x):
    """Broyden banded (BRYBND, CUTEst): r_i = x_i(2 + 5x_i²) + 1 − Σ_{j∈J_i} x_j(1 + x_j),
    J_i = {i−5, …, i+1} \\ {i}: a Jacobian of bandwidth 5 below and 1 above (7 per row)."""
    n = x.shape[0]
    t = x * (1.0 + x)
    tp = jnp.pad(t, (5, 1))
    s = sum(tp[5 + k: 5 + k + n] for k in range(-5, 2) if k != 0)
    return x * (2.0 + 5.0 * x**2) + 1.0 - s


def nondquar(x):
    """NONDQUAR (CUTEst): (x₁−x₂)² + Σ (x_i + x_{i+1} + x_n)⁴ + (x_{n−1} + x_n)²: a
    tridiagonal Hessian plus a dense last row and column."""
    return ((x[0] - x[1]) ** 2 + jnp.sum((x[:-2] + x[1:-1] + x[-1]) ** 4)
            + (x[-2] + x[-1]) ** 2)


def per_call(fn, x, repeats, warm=True):
    if warm:
        jax.block_until_ready(fn(x))  # warm-up (compile)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(fns, repeats):
    """Median and minimum seconds per call of each ``name: (fn, arg)``, the calls taken
    round-robin so that load on a shared machine hits every method alike."""
    for fn, arg in fns.values():
        jax.block_until_ready(fn(arg))  # warm-up (compile)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, (fn, arg) in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(arg))
            times[k].append(time.perf_counter() - t)
    return ({k: statistics.median(v) for k, v in times.items()},
            {k: min(v) for k, v in times.items()})


def fmt(t):
    return "-" if t is None else (f"{t * 1e6:.0f}µs" if t < 1e-3 else f"{t * 1e3:.2f}ms")


def first_call(fn, x):
    """Seconds of the first (compiling) call and its number of XLA compilations."""
    del _COMPILES[:]
    t = time.perf_counter()
    jax.block_until_ready(fn(x))
    return time.perf_counter() - t, len(_COMPILES), sum(_COMPILES)


def hvp_variants(f, x, repeats):
    """Ways to take the colours' HVPs of one Hessian, timed interleaved in one run: the
    products only (no decompression), each against colours x one HVP. Issue 14 item 5 asked
    which of these closes the gap to c x one HVP on Rosenbrock n=1e5."""
    hess = sa.sparse_hessian(f, x)
    col = hess.coloring
    c, n = col.n_colors, x.shape[0]
    colors = jax.device_put(np.asarray(col.column_colors, np.int32))
    S = jax.device_put(np.asarray(col.seeds()[0], x.dtype))
    grad = jax.grad(f)

    def in_graph(colors):
        return (jnp.arange(c, dtype=colors.dtype)[:, None] == colors[None, :]).astype(x.dtype)

    def fwd_over_rev(z, S):
        return jax.vmap(lambda v: jax.jvp(grad, (z,), (v,))[1])(S)

    def fori_linearized(z, colors):
        _, lin = jax.linearize(grad, z)

        def body(k, buf):
            v = (colors == k).astype(z.dtype)
            return jax.lax.dynamic_update_index_in_dim(buf, lin(v), k, 0)

        return jax.lax.fori_loop(0, c, body, jnp.zeros((c, n), z.dtype))

    def scan_linearized(z, colors):
        _, lin = jax.linearize(grad, z)
        ks = jnp.arange(c, dtype=colors.dtype)
        return jax.lax.scan(lambda _, k: (None, lin((colors == k).astype(z.dtype))), None,
                            ks)[1]

    variants = {
        "vmap fwd_over_rev, seeds from colours in the graph":
            (lambda z, col_: fwd_over_rev(z, in_graph(col_)), colors),
        "vmap fwd_over_rev, seeds an argument (ours)": (fwd_over_rev, S),
        "linearize once, vmap the linear map":
            (lambda z, S: jax.vmap(jax.linearize(grad, z)[1])(S), S),
        "fori_loop over colours, linearized": (fori_linearized, colors),
        "scan over colours, linearized": (scan_linearized, colors),
        "vmap rev_over_fwd": (lambda z, S: jax.vmap(
            lambda v: jax.grad(lambda y: jax.jvp(f, (y,), (v,))[1])(z))(S), S),
        "vmap rev_over_rev": (lambda z, S: jax.vmap(jax.vjp(grad, z)[1])(S)[0], S),
        "one HVP (tangent an argument)": (lambda z, v: jax.jvp(grad, (z,), (v,))[1], S[0]),
    }
    fns, ref = {}, None
    for name, (fn, arg) in variants.items():
        del _COMPILES[:]
        compiled = jax.jit(fn).lower(x, arg).compile()
        out = np.asarray(compiled(x, arg))
        if name != "one HVP (tangent an argument)":
            ref = out if ref is None else ref
            np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
        fns[name] = (lambda z, compiled=compiled, arg=arg: compiled(z, arg), x)
    med, mn = interleaved(fns, repeats)
    one, one_min = med["one HVP (tangent an argument)"], mn["one HVP (tangent an argument)"]
    print(f"\nHVP variants, {hess!r}: products only, median (min) of {repeats}, interleaved")
    for name in variants:
        print(f"  {name:54s} {fmt(med[name]):>9s} ({fmt(mn[name]):>8s})  "
              f"/(c·1 HVP) {med[name] / (c * one):.2f} ({mn[name] / (c * one_min):.2f})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    ap.add_argument("--no-dense", action="store_true", help="skip dense jacfwd / hessian")
    ap.add_argument("--hvp-variants", action="store_true",
                    help="only time the ways of taking the Rosenbrock Hessian's HVPs")
    a = ap.parse_args()
    if a.hvp_variants:
        n = 10_000 if a.quick else 100_000
        hvp_variants(rosenbrock, jnp.asarray(np.random.default_rng(0).normal(size=n)),
                     a.repeats)
        return
    import asdex

    rng = np.random.default_rng(0)
    big = 10_000 if a.quick else 100_000
    cases = [
        (f"Rosenbrock Hessian n={big:.0e}", "hess", rosenbrock, rng.normal(size=big)),
        ("BRYBND Jacobian n=1e+04", "jac", brybnd_residual, rng.normal(size=10_000)),
        ("NONDQUAR Hessian n=1e+04", "hess", nondquar, rng.normal(size=10_000)),
        ("banded Jacobian n=1e+05", "jac", banded_residual, rng.normal(size=big)),
    ]
    for N in ([100] if a.quick else [100, 300]):
        cases.append((f"Bratu Jacobian N={N}", "jac", bratu_residual(N),
                      0.1 * rng.normal(size=N * N)))
    # --quick: p = 400; at p = 1000 dense jacfwd carries a (nnz, p, q) tangent of G (~5 GB)
    sp, sq = (400, 80) if a.quick else (1000, 200)
    gi, gj, L, Y, B, X, g0 = seed_problem(sp, sq, selection=True)
    cases.append((f"seed Y·GᵀLG·B (selection) p={sp}", "jac",
                  seed_residual_scatter(gi, gj, L, Y, B, X, sp, sq), g0))
    cases = [c for c in cases if a.only in c[0]]

    print(f"jax {jax.__version__}, asdex 0.5.1; median (and min) of {a.repeats} jitted calls "
          "after a warm-up, methods interleaved; compiles: XLA compilations of our first call\n")
    cols = ("colors", "asdex col", "ours", "asdex", "dense", "1 JVP", "products", "decomp",
            "ours/asdex", "ours/(c·1)", "min:asdex", "min:(c·1)", "compiles", "1st call")
    print(f"{'case':34s} " + " ".join(f"{c:>10s}" for c in cols))
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
        t_first, n_comp, t_comp = first_call(ours.values, x)
        ours_fn = jax.jit(ours.values)
        # correctness of what is timed: same values as asdex on our pattern
        # (as sparse matrices: a dense 1e5 x 1e5 check would need 80 GB)
        J_ours = ours.to_scipy(np.asarray(ours.values(x)), "csr")
        them = theirs(x)
        idx = np.asarray(them.indices)
        J_them = scipy.sparse.csr_array((np.asarray(them.data), (idx[:, 0], idx[:, 1])),
                                        shape=J_ours.shape)
        err = abs(J_ours - J_them).max() if J_ours.nnz else 0.0
        assert err <= 1e-10 * max(abs(J_them).max(), 1.0), (name, err)
        comp = ours.compressed(x)
        index = ours._static.get()
        dec = jax.jit(_decompress)
        fns = {
            "ours": (ours_fn, x),
            "asdex": (theirs, x),
            "products": (jax.jit(ours.compressed), x),
            "decomp": (lambda cc, dec=dec, index=index: dec(cc, index), comp),
            "one": (one, x),
        }
        t, t_min = interleaved(fns, a.repeats)
        t_dense = None
        if dense is not None and not a.no_dense:
            t0 = time.perf_counter()
            jax.block_until_ready(dense(x))
            slow = time.perf_counter() - t0 > DENSE_TIME_LIMIT
            t_dense = per_call(dense, x, 1 if slow else 3, warm=False)
        c = ours.n_colors
        row = (f"{c}", f"{theirs_col.num_colors}", fmt(t["ours"]), fmt(t["asdex"]),
               fmt(t_dense) if t_dense is not None else "skipped", fmt(t["one"]),
               fmt(t["products"]), fmt(t["decomp"]),
               f"{t['ours'] / t['asdex']:.2f}", f"{t['ours'] / (c * t['one']):.2f}",
               f"{t_min['ours'] / t_min['asdex']:.2f}",
               f"{t_min['ours'] / (c * t_min['one']):.2f}",
               f"{n_comp} ({t_comp:.2f}s)", f"{t_first:.2f}s")
        print(f"{name:34s} " + " ".join(f"{s:>10s}" for s in row), flush=True)

    if a.only:
        return
    n = 1_000_000
    x = jax.ShapeDtypeStruct((n,), jnp.float64)
    p = sa.jacobian_sparsity(banded_residual, x)
    t = time.perf_counter()
    col = sa.color_jacobian(p)
    print(f"\ncoloring a 1e6-column banded pattern (nnz={p.nnz}): {time.perf_counter() - t:.2f}s, "
          f"{col.n_colors} colors (goal < 2 s)")


if __name__ == "__main__":
    main()
