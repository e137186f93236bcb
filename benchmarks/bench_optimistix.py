"""Benchmark: sparseopt_adapters.optimistix against optimistix's own solvers.

Problems
    bratu N      2-D Bratu root-find ``Δu + λeᵘ = 0`` (λ = 6, 5-point stencil), n = N²
                 unknowns, ``optx.root_find`` from u = 0; and the same problem as minimisation
                 of its energy with ``optx.minimise``.
    seed p       E(g) = Σₖ ‖Y GᵀLₖG B − Xₖ‖² over the 2p nonzeros g of a banded p × p/4
                 PatternMatrix G (tridiagonal Lₖ, Y and B selecting 90 % of rows / columns, a
                 reachable target), ``optx.least_squares`` from a perturbed start.

Solvers (each jitted; "first" = first call: tracing, detection + coloring, compilation and the
solve; "median" = median of the warm calls)
    ours            sa_optx.GaussNewton / LevenbergMarquardt / Newton (route "auto")
    dense default   optx.GaussNewton / LevenbergMarquardt with their default (dense) linear
                    solver; skipped where the dense Jacobian or its factorisation is infeasible
                    (at N = 100 one run only: "first" is the measurement)
    LSMR, CG        the same optimistix solver with a hand-picked matrix-free lineax solver:
                    lx.LSMR(rtol=atol=1e-10, conlim=1e14) and lx.Normal(lx.CG(rtol=atol=1e-10))
    SparseDirect()  optx.GaussNewton with our lineax solver (pattern detected on the operator)
    BFGS, LBFGS     optx.BFGS / optx.LBFGS for the minimisation form

Run::

    python benchmarks/bench_optimistix.py            # N = 50, 100, 300; seed p = 100, 400, 1000
    python benchmarks/bench_optimistix.py --quick    # N = 50, 100; seed p = 100 (< 2 min)
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import lineax as lx  # noqa: E402
import numpy as np  # noqa: E402
import optimistix as optx  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402
from sparseopt_adapters import optimistix as sa_optx  # noqa: E402

TOL = 1e-8
DENSE_MAX_N = 10_000  # unknowns: dense LU/QR beyond this is skipped (65 GB at N = 300)
DENSE_MAX_MN = 2e6  # m·n of a dense least-squares Jacobian (QR costs 2mn² per step)
BFGS_MAX_N = 2500  # BFGS keeps a dense n×n inverse Hessian
MAX_STEPS = {"root": 300, "lsq": 300, "min": 20_000}


# ---------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------
def bratu(N, lam=6.0):
    h = 1.0 / (N + 1)

    def F(u, args):
        U = jnp.pad(u.reshape(N, N), 1)
        lap = U[2:, 1:-1] + U[:-2, 1:-1] + U[1:-1, 2:] + U[1:-1, :-2] - 4 * U[1:-1, 1:-1]
        return (lap / h**2 + lam * jnp.exp(U[1:-1, 1:-1])).reshape(-1)

    def energy(u, args):  # its stationary points are the Bratu solutions (scaled by h²)
        U = jnp.pad(u.reshape(N, N), 1)
        gx, gy = U[1:, 1:-1] - U[:-1, 1:-1], U[1:-1, 1:] - U[1:-1, :-1]
        return 0.5 * jnp.sum(gx**2) + 0.5 * jnp.sum(gy**2) - h**2 * lam * jnp.sum(jnp.exp(u))

    return F, energy, jnp.zeros(N * N)


def seed(p, n_ops=3, seed=0):
    rng = np.random.default_rng(seed)
    q = p // 4
    rows = np.repeat(np.arange(p), 2)
    a = (np.arange(p) * q) // p
    cols = np.stack([a, (a + 1) % q], 1).ravel()
    Ls = [
        sp.diags_array(
            [rng.standard_normal(p - 1), 2 + rng.random(p), rng.standard_normal(p - 1)],
            offsets=[-1, 0, 1],
            format="csr",
        )
        for _ in range(n_ops)
    ]
    keep = int(0.9 * q)  # Y drops the last 10 % of rows, B the first 10 % of columns
    ys, bs = np.arange(keep), np.arange(q - keep, q)
    Y = sp.csr_array((np.ones(keep), (np.arange(keep), ys)), shape=(keep, q))
    B = sp.csr_array((np.ones(keep), (bs, np.arange(keep))), shape=(q, keep))

    def model(G):
        return [((Y @ (G.T @ L @ G)) @ B).todense() for L in Ls]

    def residual(G, X):
        return [M - Xk for M, Xk in zip(model(G), X, strict=True)]

    Gstar = sa.PatternMatrix(rng.standard_normal(rows.size), rows, cols, (p, q))
    X = [jnp.asarray(M) for M in model(Gstar)]
    G0 = sa.PatternMatrix(Gstar.values + 0.05 * rng.standard_normal(rows.size), rows, cols, (p, q))
    return residual, G0, X


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
def run(kind, fn, solver, y0, args, repeats):
    entry = {"root": optx.root_find, "lsq": optx.least_squares, "min": optx.minimise}[kind]
    max_steps = MAX_STEPS[kind]

    @jax.jit
    def solve(y0, args):
        sol = entry(fn, solver, y0, args, max_steps=max_steps, throw=False)
        return sol.value, sol.result, sol.stats["num_steps"]

    t = time.perf_counter()
    out = jax.block_until_ready(solve(y0, args))
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(solve(y0, args))
        times.append(time.perf_counter() - t)
    value, result, steps = out
    return {
        "first": first,
        "median": float(np.median(times)) if times else float("nan"),
        "steps": int(steps),
        "ok": bool(result == optx.RESULTS.successful),
        "value": value,
    }


def quality(kind, fn, value, args):
    """‖F‖∞ for root-finds, ½‖r‖² for least squares, ‖∇f‖∞ for minimisation."""
    if kind == "root":
        return f"|F|={float(jnp.max(jnp.abs(fn(value, args)))):.1e}"
    if kind == "lsq":
        r = jax.flatten_util.ravel_pytree(fn(value, args))[0]
        return f"cost={float(0.5 * jnp.sum(r**2)):.1e}"
    g = jax.grad(fn)(value, args)
    return f"|grad|={float(jnp.max(jnp.abs(jax.flatten_util.ravel_pytree(g)[0]))):.1e}"


ROWS = []


def record(problem, n, kind, name, fn, solver, y0, args, repeats, skip=None):
    if skip:
        ROWS.append((problem, n, name, None, None, None, "skipped: " + skip))
        print(f"  {name:36s} skipped: {skip}", flush=True)
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = run(kind, fn, solver, y0, args, repeats)
    note = quality(kind, fn, r["value"], args) + ("" if r["ok"] else "  FAILED")
    ROWS.append((problem, n, name, r["steps"], r["first"], r["median"], note))
    print(f"  {name:36s} steps {r['steps']:5d}  first {r['first']:7.2f}s  median "
          f"{r['median']:8.3f}s  {note}", flush=True)
    return r


def lsmr(cls):
    return cls(TOL, TOL, linear_solver=lx.LSMR(rtol=1e-10, atol=1e-10, conlim=1e14))


def normal_cg(cls):
    return cls(TOL, TOL, linear_solver=lx.Normal(lx.CG(rtol=1e-10, atol=1e-10)))


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------
def bench_bratu(N, repeats, quick):
    F, energy, u0 = bratu(N)
    n = N * N
    problem = f"bratu N={N}"
    plan = sa_optx.GaussNewton(TOL, TOL).plan(F, u0)
    print(f"{problem}: n = {n}, plan {plan!r}", flush=True)
    GN = optx.GaussNewton
    record(problem, n, "root", "ours GaussNewton", F, sa_optx.GaussNewton(TOL, TOL), u0, None,
           repeats)
    dense_skip = None
    if n > DENSE_MAX_N:
        dense_skip = f"dense J alone is {n * n * 8 / 1e9:.0f} GB"
    elif quick and n > 2500:
        dense_skip = "--quick (about 3 min per solve at N = 100)"
    record(problem, n, "root", "optx.GaussNewton (dense default)", F, GN(TOL, TOL), u0, None,
           0 if n > 2500 else repeats, skip=dense_skip)
    record(problem, n, "root", "optx.GaussNewton + LSMR", F, lsmr(GN), u0, None, repeats)
    record(problem, n, "root", "optx.GaussNewton + Normal(CG)", F, normal_cg(GN), u0, None,
           repeats, skip="--quick" if quick else (
               None if N <= 50 else "fails at N = 50 (CG on JᵀJ stalls)"))
    record(problem, n, "root", "optx.GaussNewton + SparseDirect()", F,
           GN(TOL, TOL, linear_solver=sa_optx.SparseDirect()), u0, None, repeats)
    # minimisation of the energy
    record(problem, n, "min", "ours Newton (minimise)", energy, sa_optx.Newton(TOL, TOL), u0,
           None, repeats)
    record(problem, n, "min", "optx.BFGS (minimise)", energy, optx.BFGS(TOL, TOL), u0, None,
           repeats, skip=(f"dense n×n inverse Hessian ({n * n * 8 / 1e9:.1f} GB)"
                          if n > BFGS_MAX_N else "--quick" if quick else None))
    record(problem, n, "min", "optx.LBFGS (minimise)", energy, optx.LBFGS(TOL, TOL), u0, None,
           repeats)


def bench_seed(p, repeats, quick):
    residual, G0, X = seed(p)
    n = G0.nnz
    problem = f"seed p={p}"
    plan = sa_optx.LevenbergMarquardt(TOL, TOL).plan(residual, G0, X)
    m = sum(x.size for x in X)
    print(f"{problem}: n = {n}, m = {m}, plan {plan!r}", flush=True)
    LM = optx.LevenbergMarquardt
    record(problem, n, "lsq", "ours LevenbergMarquardt", residual,
           sa_optx.LevenbergMarquardt(TOL, TOL), G0, X, repeats)
    record(problem, n, "lsq", "optx.LevenbergMarquardt (dense QR)", residual, LM(TOL, TOL), G0,
           X, repeats, skip=(f"m·n = {m * n:.1e}: QR costs 2mn² = {2 * m * n * n / 1e9:.0f} "
                             "GFlop per step" if m * n > DENSE_MAX_MN else None))
    record(problem, n, "lsq", "optx.LevenbergMarquardt + LSMR", residual, lsmr(LM), G0, X,
           repeats)
    record(problem, n, "lsq", "optx.LevenbergMarquardt + Normal(CG)", residual, normal_cg(LM),
           G0, X, repeats, skip="--quick" if quick else None)
    energy = lambda G, X: sum(jnp.sum(r**2) for r in residual(G, X))  # noqa: E731
    record(problem, n, "min", "ours Newton (minimise)", energy, sa_optx.Newton(TOL, TOL), G0,
           X, repeats)
    record(problem, n, "min", "optx.LBFGS (minimise)", energy, optx.LBFGS(TOL, TOL), G0, X,
           repeats)


def print_table():
    print()
    head = (f"| {'problem':14s} | {'n':>6s} | {'solver':36s} | {'steps':>5s} | {'first s':>8s} "
            f"| {'median s':>9s} | note")
    print(head)
    print("|" + "|".join("-" * (len(c) + 0) for c in head.split("|")[1:-1]) + "|------")
    for problem, n, name, steps, first, median, note in ROWS:
        if steps is None:
            print(f"| {problem:14s} | {n:6d} | {name:36s} | {'':>5s} | {'':>8s} | {'':>9s} "
                  f"| {note}")
        else:
            med = "one run" if np.isnan(median) else f"{median:9.3f}"
            print(f"| {problem:14s} | {n:6d} | {name:36s} | {steps:5d} | {first:8.2f} | "
                  f"{med:>9s} | {note}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 50, 100; seed p = 100")
    parser.add_argument("--repeats", type=int, default=None, help="warm runs per solver")
    parser.add_argument("--bratu", default=None, help="comma-separated N (e.g. 50,100)")
    parser.add_argument("--seed", default=None, help="comma-separated p (e.g. 100,400)")
    opts = parser.parse_args(argv)
    repeats = opts.repeats or (1 if opts.quick else 3)
    sizes = (50, 100) if opts.quick else (50, 100, 300)
    seeds = (100,) if opts.quick else (100, 400, 1000)
    if opts.bratu is not None:
        sizes = tuple(int(x) for x in opts.bratu.split(",") if x)
    if opts.seed is not None:
        seeds = tuple(int(x) for x in opts.seed.split(",") if x)
    print(f"jax {jax.__version__}, optimistix {optx.__version__}, lineax {lx.__version__}, "
          f"{jax.devices()[0].platform}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
    t0 = time.perf_counter()
    for N in sizes:
        bench_bratu(N, repeats if N <= 100 else 1, opts.quick)
    for p in seeds:
        bench_seed(p, repeats if p <= 400 else 1, opts.quick)
    print_table()
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
