"""Gauss–Newton linear-solve routes on the seed problem: matrix-free vs assembled vs auto.

Seed problem (see DESIGN.md): E(g) = Σₖ ‖Y GᵀLₖG B − Xₖ‖²_F over the nonzeros g of a
prolongation G (bilinear pattern on a 2-D mesh, p×q), three mesh operators Lₖ (p×p, two
non-symmetric), reachable targets Xₖ from a ground truth g*, start at bilinear weights.

- dense Y (q×q) and B (q×q/2): every residual depends on every g — a dense Jacobian;
- selection Y = I and B = 9 of every 10 coarse columns: a sparse Jacobian with ~15 colors.

For each case, size and route (``direct`` = colored J, SuperLU on JᵀJ; ``cg`` = CG on the
matrix-free JᵀJ; ``lsmr`` = LSMR on J; ``auto``) it reports the one-off setup (detection,
coloring, route choice), then the best-of-5 (of 2 for solves over 5 s) wall time of a full
Gauss–Newton solve to ‖∇E‖ ≤ 10⁻⁸‖∇E₀‖ after a warm-up solve (compilation), and the steps
taken. Best-of rather than median: on a shared machine the spread is load, not the code
(``auto`` runs the same code as the fixed route it picks).

``--end-to-end`` (issue 13) instead times the *default* ``sa.gauss_newton`` end to end —
setup included: the cold first call after ``sa.clear_cache()`` and the warm repeat (setup
cache hit) — next to scipy ``least_squares`` (``trf``, the exact sparse Jacobian from
``sa.sparse_jacobian``, LSMR tolerances 1e-12; cold includes that Jacobian's setup and
compilation) and CasADi + IPOPT (exact Hessian; cold = model + build + solve, warm = solve
again), on sparse members of the seed family: ``selection`` (Y = I, B keeps 9 of 10 coarse
columns), ``rank_deficient`` (Y = B = selection of every 3rd coarse node: unused columns of
G, singular JᵀJ) and ``wide`` (Y, B select every 6th node: m < n). Medians of the warm
repeats; one cold call each. Goal: ahead of both on every member, 2× faster than scipy-trf.

``--one-off`` (issue 14) times the README main example's one-off, each run in a FRESH
subprocess (so nothing is warm: JAX, numba's in-memory dispatchers, the setup cache): the
import (reported separately), ``sa.GaussNewton(...)`` (detection, coloring, route), the
first ``solve(max_steps=1)`` (its compilation) and the full solve after it, each with its
count of XLA compilations (``jax.monitoring``) and of traces of the residual. Beside it, the
dense JAX baseline on the same problem at first call: ``jit(jax.jacfwd(residual))`` and a
dense ``jnp.linalg.lstsq`` Gauss–Newton step (at ``--dense-nc``, default 12: at nc = 28
the dense Jacobian is 20 172 × 6 724, 1.1 GB). Medians over ``--runs`` processes.

Run: ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_gauss_newton.py [--quick] [--end-to-end]``
or ``... --one-off [--nc 28] [--dense-nc 12] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import statistics
import time
import warnings

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402

_EX = pathlib.Path(__file__).parents[1] / "examples" / "sparse_operator_fit.py"
_spec = importlib.util.spec_from_file_location("sparse_operator_fit", _EX)
ex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ex)

ROUTES = ["direct", "cg", "lsmr", "auto"]


def seed_problem(nc: int, case: str, contrast: float = 10.0, noise: float = 0.05, seed=0):
    rng = np.random.default_rng(seed)
    G0 = ex.bilinear_prolongation(nc)
    Ls = ex.mesh_operators(2 * nc - 1, contrast)
    q = G0.shape[1]
    if case == "dense":
        Y = rng.standard_normal((q, q)) / np.sqrt(q)
        B = rng.standard_normal((q, q // 2)) / np.sqrt(q)
    elif case == "selection":  # Y = I, B keeps 9 of every 10 coarse columns
        Y = sp.eye_array(q, format="csr")
        cols = np.flatnonzero(np.arange(q) % 10 != 0)
        B = sp.csr_array((np.ones(cols.size), (cols, np.arange(cols.size))), shape=(q, cols.size))
    else:  # "rank_deficient" (every 3rd coarse node) or "wide" (every 6th): Y = Bᵀ selects
        every = 3 if case == "rank_deficient" else 6
        cols = np.flatnonzero(np.arange(q) % every == 0)
        B = sp.csr_array((np.ones(cols.size), (cols, np.arange(cols.size))), shape=(q, cols.size))
        Y = B.T.tocsr()

    def model(G):
        out = []
        for L in Ls:
            M = (Y @ (G.T @ L @ G)) @ B
            out.append(M.values if isinstance(M, sa.PatternMatrix) else M)
        return out

    gstar = np.asarray(G0.values) * (1.0 + noise * rng.standard_normal(G0.nnz))
    X = [np.asarray(x) for x in model(sa.PatternMatrix(gstar, G0.pattern))]

    def residual(G, X):
        return [a - b for a, b in zip(model(G), X, strict=True)]

    residual.parts = (Ls, Y, B, gstar)  # for the CasADi model of the same problem
    return residual, G0, X


def bench_one(residual, G0, X, route, repeats):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.DenseColoringWarning)
        gn = sa.GaussNewton(residual, G0, X, route=route)
    setup = time.perf_counter() - t0
    gn.solve(G0, X, max_steps=1)  # compile
    times, res = [], None
    for k in range(repeats):
        res = gn.solve(G0, X, rtol=1e-8, max_steps=60)
        times.append(res.wall_time)
        if k == 0 and res.wall_time > 5.0:
            repeats = min(repeats, 2)  # slow routes: two runs are enough to show it
    return gn, res, setup, min(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, one repeat")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    sizes = {"dense": (4,), "selection": (8,)}
    if not a.quick:
        sizes = {"dense": (4, 6), "selection": (12, 24)}
    repeats = 1 if a.quick else a.repeats
    header = (
        f"{'Y, B':10} {'nc':>3} {'n':>6} {'m':>7} {'route':>7} {'chosen':>7} {'colors':>6} "
        f"{'setup s':>8} {'solve s':>8} {'steps':>5} {'ms/step':>8} {'E/E0':>8}"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for case, ncs in sizes.items():
        for nc in ncs:
            residual, G0, X = seed_problem(nc, case)
            best = {}
            for route in ROUTES:
                gn, res, setup, solve = bench_one(residual, G0, X, route, repeats)
                e_rel = res.energy / res.energies[0]
                ok = "" if res.success else "  (not converged: " + res.message + ")"
                colors = "-" if gn.n_colors is None else str(gn.n_colors)
                print(
                    f"{case:10} {nc:3d} {gn.n:6d} {gn.m:7d} {route:>7} {gn.route:>7} "
                    f"{colors:>6} {setup:8.2f} {solve:8.3f} {res.n_steps:5d} "
                    f"{1e3 * solve / max(res.n_steps, 1):8.1f} {e_rel:8.0e}{ok}",
                    flush=True,
                )
                best[route] = solve if res.success else float("inf")
                rows.append((case, nc, route, gn.route, solve, res.success))
            fastest = min(v for k, v in best.items() if k != "auto")
            winner = min((v, k) for k, v in best.items() if k != "auto")[1]
            print(
                f"{'':10} {'':3} fastest fixed route: {winner}; auto chose {gn.route}: "
                f"{best['auto'] / fastest:.2f}× the fastest",
                flush=True,
            )
    return rows


def _energy(residual, G, X):
    return float(sum(np.sum(np.asarray(r) ** 2) for r in residual(G, X)))


def ours_end_to_end(residual, G0, X, repeats):
    sa.clear_cache()
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sa.gauss_newton(residual, G0, X)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = sa.gauss_newton(residual, G0, X)
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm), res.energy, res.success, res.route


def scipy_end_to_end(residual, G0, X, repeats):
    import jax
    import jax.numpy as jnp
    from scipy.optimize import least_squares

    def run():
        def flat(v):
            rs = residual(sa.PatternMatrix(v, G0.pattern), X)
            return jnp.concatenate([jnp.ravel(r) for r in rs])

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            jac = sa.sparse_jacobian(flat, G0.values)
        fj = jax.jit(flat)
        jj = jax.jit(lambda v: jac(v).values if hasattr(jac(v), "values") else jac(v).data)
        p = jac.pattern
        return fj, jj, p

    def solve(fj, jj, p):
        def jacobian(v):
            return sp.csr_array((np.asarray(jj(v)), (p.rows, p.cols)), shape=p.shape)

        out = least_squares(
            lambda v: np.asarray(fj(v)), np.asarray(G0.values), jac=jacobian, method="trf",
            ftol=1e-12, xtol=1e-12, gtol=1e-12, tr_options={"atol": 1e-12, "btol": 1e-12},
        )
        return float(2.0 * out.cost), out.success

    t0 = time.perf_counter()
    fj, jj, p = run()
    e, ok = solve(fj, jj, p)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        e, ok = solve(fj, jj, p)
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm), e, ok


def casadi_end_to_end(residual, G0, X, repeats):
    try:
        import casadi as ca
    except ImportError:
        return None
    Ls, Y, B, gstar = residual.parts
    p, q = G0.shape
    rows, cols = np.asarray(G0.pattern.rows), np.asarray(G0.pattern.cols)

    def dm(A):
        A = sp.csc_matrix(A)
        return ca.DM(ca.Sparsity(A.shape[0], A.shape[1], A.indptr.tolist(),
                                 A.indices.tolist()), A.data.tolist())

    def build():
        g = ca.SX.sym("g", G0.nnz)
        perm = np.lexsort((rows, cols))  # CasADi stores nonzeros column-major
        G = ca.SX(ca.Sparsity.triplet(p, q, rows[perm].tolist(), cols[perm].tolist()),
                  g[perm.tolist()])
        Gd = np.asarray(sa.PatternMatrix(gstar, G0.pattern).todense())
        terms = []
        for L in Ls:
            M = ca.mtimes([dm(Y), G.T, dm(L), G, dm(B)])
            target = np.asarray(Y @ (Gd.T @ (L @ Gd)) @ B)
            r_i, c_i = M.sparsity().get_triplet()
            terms.append(M.nz[:] - ca.DM(target[np.asarray(r_i), np.asarray(c_i)]))
        f = ca.sumsqr(ca.vertcat(*terms))
        opts = {"ipopt.print_level": 0, "print_time": 0, "ipopt.tol": 1e-12,
                "ipopt.sb": "yes"}
        return ca.nlpsol("s", "ipopt", {"x": g, "f": f}, opts)

    t0 = time.perf_counter()
    solver = build()
    sol = solver(x0=np.asarray(G0.values))
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sol = solver(x0=np.asarray(G0.values))
        warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm), float(sol["f"]), solver.stats()["success"]


def end_to_end(quick: bool, repeats: int):
    nc = 8 if quick else 16
    cases = ("selection", "rank_deficient", "wide")
    header = (f"{'member':15} {'n':>6} {'m':>6} {'solver':>14} {'cold s':>8} {'warm s':>8} "
              f"{'E/E0':>8} {'ok':>5}  ratio(warm) vs ours")
    print(header)
    print("-" * len(header))
    for case in cases:
        residual, G0, X = seed_problem(nc, case)
        e0 = _energy(residual, G0, X)
        m = sum(int(np.size(x)) for x in X)
        cold, warm, e, ok, route = ours_end_to_end(residual, G0, X, repeats)
        print(f"{case:15} {G0.nnz:6d} {m:6d} {'ours (' + route + ')':>14} {cold:8.2f} "
              f"{warm:8.3f} {e / e0:8.0e} {str(bool(ok)):>5}", flush=True)
        for name, fn in (("scipy trf", scipy_end_to_end), ("casadi+ipopt", casadi_end_to_end)):
            out = fn(residual, G0, X, repeats)
            if out is None:
                print(f"{'':15} {'':6} {'':6} {name:>14}  (not installed)")
                continue
            c2, w2, e2, ok2 = out
            print(f"{'':15} {'':6} {'':6} {name:>14} {c2:8.2f} {w2:8.3f} {e2 / e0:8.0e} "
                  f"{str(bool(ok2)):>5}  cold {c2 / cold:5.2f}×, warm {w2 / warm:5.2f}×",
                  flush=True)


# ---------------------------------------------------------------------------------------
# --one-off: the main example's first call, in fresh processes
# ---------------------------------------------------------------------------------------
_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
t0 = time.perf_counter()
import jax, jax.numpy as jnp, numpy as np
import sparseopt_adapters as sa
t_import = time.perf_counter() - t0
import importlib.util
spec = importlib.util.spec_from_file_location("ex", sys.argv[3])
ex = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ex)
compiles = []
jax.monitoring.register_event_duration_secs_listener(
    lambda ev, d, **k: compiles.append(d)
    if ev == "/jax/core/compile/backend_compile_duration" else None)
kind, nc = sys.argv[1], int(sys.argv[2])
residual, G0, targets, _ = ex.make_problem(nc, 1000.0, 0.05)
traces = []
def counted(G, t):
    traces.append(1)
    return residual(G, t)
out = {"import": t_import, "n": int(G0.nnz)}
def phase(name, fn):
    c, tr, t = len(compiles), len(traces), time.perf_counter()
    val = fn()
    jax.block_until_ready(jax.tree.leaves(val))
    out[name] = {"s": time.perf_counter() - t, "compiles": len(compiles) - c,
                 "compile_s": sum(compiles[c:]), "traces": len(traces) - tr}
    return val
if kind == "ours":
    gn = phase("construct", lambda: sa.GaussNewton(counted, G0, targets, route="auto"))
    phase("first_step", lambda: gn.solve(G0, targets, max_steps=1).energy)
    res = phase("solve", lambda: gn.solve(G0, targets, rtol=1e-8, max_steps=50))
    out.update(m=gn.m, route=gn.route, colors=gn.n_colors, steps=res.n_steps,
               ok=bool(res.success))
else:
    pattern = G0.pattern
    def flat(g):
        r = counted(sa.PatternMatrix(g, pattern), targets)
        return jnp.concatenate([jnp.ravel(x) for x in r])
    g0 = G0.values
    jac = jax.jit(jax.jacfwd(flat))
    J = phase("jacfwd", lambda: jac(g0))
    step = jax.jit(lambda g, J: jnp.linalg.lstsq(J, -flat(g))[0])
    phase("lstsq_step", lambda: step(g0, J))
    out.update(m=int(J.shape[0]))
print("RESULT " + json.dumps(out))
"""


def _child(kind: str, nc: int) -> dict:
    import json
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parents[1]))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, kind, str(nc), str(_EX)],
                          capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not line:
        raise RuntimeError(f"one-off child ({kind}, nc={nc}) failed:\n{proc.stderr[-2000:]}")
    out = json.loads(line[0][7:])
    out["process_wall"] = wall
    return out


def _median(runs, *keys):
    vals = []
    for r in runs:
        v = r
        for k in keys:
            v = v[k]
        vals.append(v)
    return statistics.median(vals)


def one_off(nc: int, dense_nc: int, runs: int) -> None:
    print(f"Main example one-off, fresh process each run ({runs} runs, medians; a loaded "
          "2-core box: compare within a run)")
    header = (f"{'solver':24} {'nc':>3} {'n':>6} {'phase':>11} {'s':>7} {'compiles':>8} "
              f"{'compile s':>9} {'traces':>6}")
    print(header)
    print("-" * len(header))
    ones = {}
    plan = [("ours", nc)] + ([("ours", dense_nc)] if dense_nc != nc else []) + [
        ("dense", dense_nc)]
    for kind, k_nc in plan:
        rs = [_child(kind, k_nc) for _ in range(runs)]
        if kind == "ours":
            name, phases = "sa.GaussNewton", ("construct", "first_step", "solve")
        else:
            name, phases = "dense jit(jacfwd)+lstsq", ("jacfwd", "lstsq_step")
        for ph in phases:
            print(f"{name:24} {k_nc:3d} {rs[0]['n']:6d} {ph:>11} {_median(rs, ph, 's'):7.3f} "
                  f"{_median(rs, ph, 'compiles'):8.0f} {_median(rs, ph, 'compile_s'):9.3f} "
                  f"{_median(rs, ph, 'traces'):6.0f}")
        one = statistics.median([sum(r[p]["s"] for p in phases[:2]) for r in rs])
        extra = (f"route {rs[0]['route']}, {rs[0]['colors']} colors, {rs[0]['steps']} steps, "
                 f"success {rs[0]['ok']}" if kind == "ours" else f"m = {rs[0]['m']}")
        print(f"{'':24} {'':3} {'':6} {'ONE-OFF':>11} {one:7.3f}  (+ import "
              f"{_median(rs, 'import'):.2f} s; process {_median(rs, 'process_wall'):.2f} s; "
              f"{extra})")
        if kind == "ours":
            ones[k_nc] = one
        elif k_nc in ones:
            print(f"{'':24} dense first call / ours (construct + first step), nc={k_nc}: "
                  f"{one / ones[k_nc]:.2f}×")


if __name__ == "__main__":
    import sys

    if "--one-off" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--one-off", action="store_true")
        ap.add_argument("--nc", type=int, default=28)
        ap.add_argument("--dense-nc", type=int, default=12)
        ap.add_argument("--runs", type=int, default=3)
        a = ap.parse_args()
        one_off(a.nc, a.dense_nc, a.runs)
    elif "--end-to-end" in sys.argv:
        end_to_end("--quick" in sys.argv, 1 if "--quick" in sys.argv else 3)
    else:
        main()
