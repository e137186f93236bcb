"""scipy.optimize with our exact sparse derivatives vs scipy's own approximations.

1. trust-constr on a 2-D Gross–Pitaevskii ground state (bounds u ≥ 0, one nonlinear equality
   h²Σu² = 1): Hessians of the objective and the constraint from
   - ours: colored sparse Hessian (CSR) + exact constraint ``hess(x, v)``,
   - ``BFGS()``: scipy's dense quasi-Newton (objective and constraint),
   - ``'2-point'`` / ``'3-point'``: scipy's dense finite-difference Hessians of the exact gradient.
   Every variant gets the same exact gradient and sparse constraint Jacobian.
2. least_squares on 2-D Bratu: our colored Jacobian vs scipy's ``jac_sparsity`` finite
   differences (``'2-point'``), with the same ``tr_options``.

Columns: iters = trust-constr iterations / least_squares Jacobian evaluations; f evals counts
every call of the objective or residual (for least_squares including the finite-difference
ones); grad evals counts gradient calls (the finite-difference Hessians are built from them).

Times are medians of ``--repeat`` solves after one warm-up solve (JAX compilation excluded);
"setup" is one cold ``sparseopt_adapters.scipy`` call (detection + coloring + compilation +
solve). Threads are pinned to one (OPENBLAS_NUM_THREADS=1) or timings swing 50×.

3. (``--exact-threshold``) least_squares with a dense Jacobian (scipy's exact SVD solver) vs a
   sparse one (LSMR) by n: the measurement behind ``sa_scipy.EXACT_MAX_N``.

Run:  python benchmarks/bench_scipy.py [--quick] [--repeat R] [--exact-threshold]
"""

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize as so  # noqa: E402
from scipy.optimize._numdiff import group_columns  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402
from sparseopt_adapters import scipy as sa_scipy  # noqa: E402
from sparseopt_adapters._compressed import sparse_jacobian  # noqa: E402

from _problems import bratu_residual  # noqa: E402  isort: skip
from _report import add_json_argument, table, write_json  # noqa: E402  isort: skip


# ---------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------
def gp_problem(N: int, L: float = 6.0, beta: float = 20.0):
    h = 2 * L / (N + 1)
    x = np.linspace(-L + h, L - h, N)
    X, Y = np.meshgrid(x, x, indexing="ij")
    V = jnp.asarray(0.5 * (X**2 + Y**2))

    def energy(u, V):
        U = u.reshape(N, N)
        P = jnp.pad(U, 1)
        dx = (P[1:, 1:-1] - P[:-1, 1:-1]) / h
        dy = (P[1:-1, 1:] - P[1:-1, :-1]) / h
        return h**2 * (0.5 * (jnp.sum(dx**2) + jnp.sum(dy**2)) + jnp.sum(V * U**2)
                       + 0.5 * beta * jnp.sum(U**4))

    def mass(u):
        return h**2 * jnp.sum(u**2)

    u0 = np.exp(-(X**2 + Y**2)).reshape(-1)
    u0 /= np.sqrt(h**2 * np.sum(u0**2))
    return energy, mass, u0, (V,)


def bratu(u, lam, N):
    """The 2-D Bratu residual of ``_problems.py``, signed as −Δu − λeᵘ."""
    return -bratu_residual(N, lam)(u)


def rosenbrock_residual(x):
    return jnp.concatenate([10 * (x[1:] - x[:-1] ** 2), 1 - x[:-1]])


def bratu_1d(x):
    h = 1.0 / (x.size + 1)
    up = jnp.pad(x, 1)
    return (up[:-2] - 2 * x + up[2:]) / h**2 + 2 * jnp.exp(x)


def powell_singular(x):  # extended Powell: J rank-deficient at the solution
    a, b, c, d = x[0::4], x[1::4], x[2::4], x[3::4]
    return jnp.concatenate([a + 10 * b, jnp.sqrt(5.0) * (c - d), (b - 2 * c) ** 2,
                            jnp.sqrt(10.0) * (a - d) ** 2])


def bench_exact_threshold(repeat, sizes=(2, 4, 20, 52, 100, 152, 200)):
    """least_squares with a dense J (scipy: tr_solver='exact') vs a sparse J (LSMR), by n:
    the measurement behind `sparseopt_adapters.scipy.EXACT_MAX_N`."""
    rows = []
    starts = {"rosenbrock": (rosenbrock_residual, lambda n: np.full(n, -1.2)),
              "bratu-1d": (bratu_1d, np.zeros),
              "powell": (powell_singular, lambda n: np.tile([3.0, -1.0, 0.0, 1.0], n // 4))}
    for name, (r, start) in starts.items():
        for n in sizes:
            if name == "powell" and n % 4:
                continue
            x0 = start(n)
            out = []
            for solver in ("exact", "lsmr"):
                try:
                    res, wall = timed(lambda s=solver, r=r, x0=x0: sa_scipy.least_squares(
                        r, x0, tr_solver=s), repeat)
                    out.append((wall, res.cost, res.nfev))
                except Exception as e:  # noqa: BLE001 - LSMR's IndexError on tiny problems
                    out.append((float("nan"), type(e).__name__, None))
            (te, ce, ne), (tl, cl, nl) = out
            rows.append((f"{name} n={n}", te, ce, ne, tl, cl, nl, te / tl))
    return rows


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
def timed(fn, repeat):
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def bench_trust_constr(N, repeat, maxiter):
    energy, mass, u0, args = gp_problem(N)
    n = N * N
    opts = {"gtol": 1e-8, "xtol": 1e-10, "maxiter": maxiter}
    bounds = so.Bounds(0.0, np.inf)

    t = time.perf_counter()
    cold = sa_scipy.minimize(energy, u0, args=args, bounds=bounds,
                             constraints=so.NonlinearConstraint(mass, 1.0, 1.0), options=opts)
    setup = time.perf_counter() - t

    d = sa_scipy.derivatives(energy, u0, args=args)
    con = sa_scipy.nonlinear_constraint(mass, u0, 1.0, 1.0)

    def run(hess, con_hess):
        c = so.NonlinearConstraint(con.fun, 1.0, 1.0, jac=con.jac, hess=con_hess)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return so.minimize(d.fun, u0, jac=d.jac, hess=hess, method="trust-constr",
                               bounds=bounds, constraints=c, options=opts)

    variants = [
        ("sparse Hessian (ours)", lambda: run(d.hess, con.hess)),
        ("BFGS()", lambda: run(so.BFGS(), so.BFGS())),
        ("'2-point'", lambda: run("2-point", "2-point")),
        ("'3-point'", lambda: run("3-point", "3-point")),
    ]
    rows = []
    for name, fn in variants:
        before = dict(d.counts)
        res, wall = timed(fn, repeat)
        grads = (d.counts["fun_grad"] - before["fun_grad"]) // (repeat + 1)
        rows.append((f"trust-constr n={n}", name, res.nit, res.nfev, grads, res.nhev,
                     res.status, res.fun, wall))
    rows.append((f"trust-constr n={n}", "ours, cold (setup+solve)", cold.nit, cold.nfev,
                 cold.derivatives.counts["fun_grad"], cold.nhev, cold.status, cold.fun, setup))
    return rows, d.hessian


def bench_least_squares(N, repeat):
    lam = 6.0
    n = N * N
    u0 = np.zeros(n)
    r_jit = jax.jit(lambda u: bratu(u, lam, N))
    calls = [0]

    def f(u):
        calls[0] += 1
        return np.array(r_jit(u))

    pattern = sa.jacobian_sparsity(lambda u: bratu(u, lam, N), jnp.zeros(n))
    tr = {**sa_scipy.DEFAULT_TR_OPTIONS, "maxiter": sa_scipy.LSMR_MAXITER_FACTOR * n}

    t = time.perf_counter()
    cold = sa_scipy.least_squares(bratu, u0, args=(lam, N))
    setup = time.perf_counter() - t
    # the same colored Jacobian, built once for the warm runs
    jac = sparse_jacobian(lambda u: bratu(u, lam, N), jnp.zeros(n), pattern=pattern)

    def j(u):
        return jac.to_scipy(np.array(jac.values(u)), "csr")

    variants = [
        ("colored Jacobian (ours)",
         lambda: so.least_squares(f, u0, jac=j, tr_options=tr)),
        ("jac_sparsity '2-point'",
         lambda: so.least_squares(f, u0, jac_sparsity=pattern.to_scipy(), tr_options=tr)),
    ]
    groups = int(group_columns(pattern.to_scipy()).max()) + 1
    rows = []
    for (name, fn), k in zip(variants, (f"{jac.n_colors} JVPs", f"{groups} f evals"),
                             strict=True):
        c0 = calls[0]
        res, wall = timed(fn, repeat)
        fevals = (calls[0] - c0) // (repeat + 1)
        rows.append((f"least_squares n={n}", name, res.njev, fevals, f"{res.njev} × {k}", "-",
                     res.status, res.cost, wall))
    rows.append((f"least_squares n={n}", "ours, cold (setup+solve)", cold.njev, cold.nfev,
                 f"{cold.njev} × {jac.n_colors} JVPs", "-", cold.status, cold.cost, setup))
    return rows, jac


def print_table(rows):
    head = ("problem", "variant", "iters", "f evals", "grad / J evals", "Hess evals",
            "status", "final f / cost", "wall [s]")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        cells = [str(c) if not isinstance(c, float) else f"{c:.6g}" for c in r[:-1]]
        cells.append(f"{r[-1]:.3f}")
        print("| " + " | ".join(cells) + " |")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 2 min)")
    ap.add_argument("--repeat", type=int, default=None, help="timed solves per variant")
    ap.add_argument("--exact-threshold", action="store_true",
                    help="only the dense-exact vs sparse-LSMR least_squares table by n")
    add_json_argument(ap)
    a = ap.parse_args(argv)
    repeat = a.repeat or (1 if a.quick else 3)
    if a.exact_threshold:
        rows = bench_exact_threshold(repeat)
        head = ("problem", "exact [s]", "exact cost", "exact nfev", "lsmr [s]", "lsmr cost",
                "lsmr nfev", "exact / lsmr")
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for r in rows:
            print("| " + " | ".join(f"{c:.3g}" if isinstance(c, float) else str(c)
                                    for c in r) + " |")
        print(f"\nEXACT_MAX_N = {sa_scipy.EXACT_MAX_N}: below it sa_scipy.least_squares "
              "hands scipy a dense Jacobian unless tr_solver is given.")
        return
    tc_sizes = (10, 16) if a.quick else (16, 32)
    ls_sizes = (30, 50) if a.quick else (50, 100)
    maxiter = 1000
    print(f"jax {jax.__version__}, scipy {__import__('scipy').__version__}, "
          f"median of {repeat} after a warm-up; maxiter={maxiter} for trust-constr\n")
    rows = []
    for N in tc_sizes:
        r, h = bench_trust_constr(N, repeat, maxiter)
        print(f"# {h!r}")
        rows += r
    for N in ls_sizes:
        r, jac = bench_least_squares(N, repeat)
        print(f"# {jac!r}")
        rows += r
    print()
    print_table(rows)
    peer = f"scipy {__import__('scipy').__version__}"
    write_json(a.json, "scipy", [table(
        f"scipy.optimize: ours vs scipy's own derivative options (median of {repeat} after a "
        "warm-up)",
        ("problem", "variant", "peer", "iters", "f evals", "grad / J evals", "Hess evals",
         "status", "final f / cost", "wall [s]"),
        [(r[0], r[1], peer, *r[2:]) for r in rows])],
        versions={"jax": jax.__version__, "scipy": peer.split()[1]})


if __name__ == "__main__":
    main()
