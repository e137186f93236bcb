"""Fit the nonzeros of a sparse operator by Gauss–Newton: sparseopt_adapters' main example.

A 2-D mesh with fine grid ``nf × nf`` (``p = nf²`` nodes) and coarse grid ``nc × nc``
(``q = nc²`` nodes, ``nf = 2 nc − 1``). ``G`` is a ``p × q`` prolongation with the bilinear
interpolation pattern (each fine node talks to its 1, 2 or 4 coarse neighbours); its nonzeros
``g`` are the unknowns. ``L₁, L₂, L₃`` are ``p × p`` mesh operators: the 5-point Laplacian and
two non-symmetric convection–diffusion operators. We fit ``g`` so that the coarse (Galerkin)
operators match targets,

    E(g) = Σₖ ‖Y GᵀLₖG B − Xₖ‖²_F,  here with Y = B = I (entries on the pattern of GᵀLₖG),

where the targets ``Xₖ = G*ᵀLₖG*`` come from a ground-truth ``g*`` (bilinear weights with 20 %
noise), so the optimum is ``E = 0``. The start is plain bilinear interpolation.

Gauss–Newton (``sa.gauss_newton``) detects the sparsity of ∂r/∂g through ``PatternMatrix``
products, colors it, assembles ``J`` from a handful of JVPs and solves each step sparse-direct.
Never is ∂r/∂G (``p·q`` columns) formed. L-BFGS (scipy ``L-BFGS-B`` with a jitted JAX
gradient) solves the same problem for comparison.

Run: ``python examples/sparse_operator_fit.py`` (``--small`` for a quick check).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402


def diffusion(kappa: np.ndarray) -> sp.csr_array:
    """5-point finite-volume ``−∇·(κ∇u) + 10⁻²κu`` on an ``nf × nf`` node grid.

    Face coefficients are harmonic means of the node coefficients ``kappa`` (``nf × nf``).
    """
    nf = kappa.shape[0]
    idx = np.arange(nf * nf).reshape(nf, nf)
    k = kappa.ravel()
    rows, cols, vals = [], [], []
    diag = 1e-2 * k
    for axis in (0, 1):
        a = np.take(idx, np.arange(nf - 1), axis=axis).ravel()
        b = np.take(idx, np.arange(1, nf), axis=axis).ravel()
        w = 2 * k[a] * k[b] / (k[a] + k[b])
        rows += [a, b]
        cols += [b, a]
        vals += [-w, -w]
        diag = diag + np.bincount(a, w, nf * nf) + np.bincount(b, w, nf * nf)
    rows.append(idx.ravel())
    cols.append(idx.ravel())
    vals.append(diag)
    data = (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols)))
    return sp.csr_array(data, shape=(nf * nf, nf * nf))


def mesh_operators(nf: int, contrast: float) -> list[sp.csr_array]:
    """Three ``nf² × nf²`` operators on a high-contrast medium: diffusion and two
    (non-symmetric) convection–diffusion operators.

    The coefficient is ``contrast`` in a set of channels and 1 elsewhere: the kind of medium
    for which interpolation must adapt to the operator.
    """
    x = np.arange(nf) / nf
    X, Y = np.meshgrid(x, x, indexing="ij")
    channels = (np.sin(6 * np.pi * X) > 0.6) | (np.sin(5 * np.pi * Y + 1) > 0.8)
    K = diffusion(np.where(channels, contrast, 1.0))
    ones = np.ones(nf)
    C = sp.diags_array([-ones[1:], ones], offsets=[-1, 0])  # upwind first difference
    Id = sp.eye_array(nf)
    return [K, (K + 2.0 * sp.kron(C, Id)).tocsr(), (K + 1.5 * sp.kron(Id, C)).tocsr()]


def bilinear_prolongation(nc: int) -> sa.PatternMatrix:
    """Bilinear interpolation from an ``nc × nc`` to an ``(2nc−1) × (2nc−1)`` vertex grid."""
    nf = 2 * nc - 1
    parents = [[i // 2] if i % 2 == 0 else [(i - 1) // 2, (i + 1) // 2] for i in range(nf)]
    pr = np.concatenate([[i] * len(parents[i]) for i in range(nf)]).astype(int)
    pc = np.concatenate(parents).astype(int)
    w1 = 1.0 - np.abs(pr / 2 - pc)  # 1-D weights: 1 or 1/2
    # tensor product of the 1-D prolongation
    P1 = sp.coo_array((w1, (pr, pc)), shape=(nf, nc))
    return sa.PatternMatrix.from_scipy(sp.kron(P1, P1).tocsr())


def make_problem(nc: int, contrast: float = 30.0, noise: float = 0.2, seed: int = 0):
    """The residual, the start ``G0``, the targets and the ground truth ``G*``."""
    rng = np.random.default_rng(seed)
    G0 = bilinear_prolongation(nc)
    Ls = mesh_operators(2 * nc - 1, contrast)
    gstar = np.asarray(G0.values) * (1.0 + noise * rng.standard_normal(G0.nnz))
    Gstar = sa.PatternMatrix(gstar, G0.pattern)
    targets = [G.T @ L @ G for G in [Gstar] for L in Ls]  # PatternMatrix on GᵀLG's pattern

    def residual(G, targets):
        # Y = B = I: the residual lives on the pattern of GᵀLₖG (no dense q × q array)
        return [(G.T @ L @ G).values - X for L, X in zip(Ls, targets, strict=True)]

    return residual, G0, [X.values for X in targets], Gstar


def run_gauss_newton(residual, G0, targets, rtol):
    t0 = time.perf_counter()
    gn = sa.GaussNewton(residual, G0, targets, route="auto")
    t_setup = time.perf_counter() - t0
    gn.solve(G0, targets, max_steps=1)  # compile the step (one-off, like the setup)
    t_compile = time.perf_counter() - t0 - t_setup
    res = gn.solve(G0, targets, rtol=rtol, max_steps=50)
    return gn, res, t_setup + t_compile


def run_lbfgs(residual, G0, targets, rtol, energy_goal, budget_s):
    from scipy.optimize import minimize

    def energy(g):
        r = residual(sa.PatternMatrix(g, G0.pattern), targets)
        return sum(jnp.sum(x * x) for x in r)

    fg = jax.jit(jax.value_and_grad(energy))
    g0 = np.asarray(G0.values)
    fg(g0)[0].block_until_ready()  # compile
    e0, grad0 = (np.asarray(a) for a in fg(g0))
    gnorm0 = float(np.linalg.norm(grad0))
    state = {"n": 0, "e": float(e0), "gn": gnorm0, "reached": None, "trace": []}
    t0 = time.perf_counter()

    class _Done(Exception):
        pass

    def fun(g):
        e, grad = fg(g)
        e, grad = float(e), np.asarray(grad)
        state["n"] += 1
        gn = float(np.linalg.norm(grad))
        if e < state["e"]:
            state["e"], state["gn"] = e, gn
        state["trace"].append((time.perf_counter() - t0, state["e"]))  # best energy so far
        if state["reached"] is None and gn <= rtol * gnorm0 and e <= energy_goal:
            state["reached"] = time.perf_counter() - t0
            raise _Done
        if time.perf_counter() - t0 > budget_s:
            raise _Done
        return e, grad

    n_iter = {"k": 0}

    def callback(xk):
        n_iter["k"] += 1

    try:
        minimize(
            fun,
            g0,
            jac=True,
            method="L-BFGS-B",
            callback=callback,
            options=dict(maxiter=10**6, maxfun=10**7, ftol=0.0, gtol=0.0, maxcor=20),
        )
    except _Done:
        pass
    wall = time.perf_counter() - t0
    return dict(
        wall=state["reached"] if state["reached"] is not None else wall,
        converged=state["reached"] is not None,
        iterations=n_iter["k"],
        evaluations=state["n"],
        energy=state["e"],
        grad_rel=state["gn"] / gnorm0,
        e0=float(e0),
        trace=state["trace"],
    )


def gauss_newton_trace(gn, G0, targets, rtol):
    """``(seconds, energy)`` at every iterate of one Gauss–Newton solve, timestamped as the
    solver reports each iterate (its ``verbose`` lines)."""
    import contextlib
    import io
    import re

    trace, t0 = [], time.perf_counter()

    class _Stamp(io.TextIOBase):
        def write(self, s):
            m = re.match(r"\s*GN\s+\d+\s+E=(\S+)", s)
            if m:
                trace.append((time.perf_counter() - t0, float(m.group(1))))
            return len(s)

    with contextlib.redirect_stdout(_Stamp()):
        t0 = time.perf_counter()
        gn.solve(G0, targets, rtol=rtol, max_steps=50, verbose=True)
    return trace


def write_trace(path, gn_trace, lb, t_setup, description):
    """Energy against time for Gauss–Newton and L-BFGS, as JSON (read by benchmarks/run.py)."""
    import json
    import pathlib

    import scipy

    data = {
        "problem": description,
        "versions": {"jax": jax.__version__, "scipy": scipy.__version__},
        "gauss_newton": {"t": [t for t, _ in gn_trace], "energy": [e for _, e in gn_trace],
                         "setup_s": t_setup},
        "lbfgs": {"t": [t for t, _ in lb["trace"]], "energy": [e for _, e in lb["trace"]],
                  "converged": lb["converged"]},
    }
    pathlib.Path(path).write_text(json.dumps(data))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", action="store_true", help="a small mesh for a quick check")
    ap.add_argument("--nc", type=int, default=None,
                    help="coarse grid size (default 28; 12 with --small)")
    ap.add_argument("--contrast", type=float, default=1000.0, help="coefficient contrast")
    ap.add_argument("--noise", type=float, default=0.05, help="relative noise of g* vs bilinear")
    ap.add_argument(
        "--lbfgs-budget",
        type=float,
        default=None,
        help="seconds for L-BFGS (default: 11× Gauss–Newton's time, enough to show a 10× gap)",
    )
    ap.add_argument("--trace-json", metavar="PATH", default=None,
                    help="write energy against time of both solvers as JSON (benchmarks/run.py)")
    a = ap.parse_args(argv)
    nc = a.nc or (12 if a.small else 28)
    rtol, energy_rel = 1e-8, 1e-10

    residual, G0, targets, Gstar = make_problem(nc, a.contrast, a.noise)
    p, q = G0.shape
    gn, res, t_setup = run_gauss_newton(residual, G0, targets, rtol)
    e0 = float(res.energies[0])
    grad_rel = res.grad_norms[-1] / res.grad_norms[0]
    gn_ok = res.success and res.energy <= energy_rel * e0
    print(
        f"Fit the {G0.nnz} nonzeros of G ({p}×{q}) so that GᵀLₖG ({q}×{q}) match 3 targets "
        f"(Lₖ: {p}×{p} mesh operators, contrast {a.contrast:g})"
    )
    print(
        f"  residuals {gn.m}, Jacobian nnz {gn.pattern.nnz}, {gn.n_colors} colors "
        f"({gn.n_colors} JVPs per Jacobian instead of {gn.n}), nnz(JᵀJ) {gn.normal_nnz}, "
        f"route {gn.route!r}"
    )
    print(
        f"Gauss–Newton: {res.n_steps} iterations, energy {e0:.2e} -> {res.energy:.2e} "
        f"(rel {res.energy / e0:.0e}), |grad| rel {grad_rel:.0e}, {res.wall_time:.2f} s "
        f"[+ {t_setup:.2f} s one-off: detection, coloring, compilation]"
    )
    budget = a.lbfgs_budget or max(1.0, 11.0 * res.wall_time)
    lb = run_lbfgs(residual, G0, targets, rtol, energy_rel * e0, budget)
    status = "reached the goal" if lb["converged"] else f"stopped at its {budget:.1f} s budget"
    print(
        f"L-BFGS (scipy L-BFGS-B, jitted JAX gradient): {lb['iterations']} iterations, "
        f"energy rel {lb['energy'] / lb['e0']:.0e}, |grad| rel {lb['grad_rel']:.0e}, "
        f"{lb['wall']:.2f} s ({status})"
    )
    ratio = lb["wall"] / res.wall_time
    bound = "" if lb["converged"] else " at least"
    print(
        f"Goal: |grad| <= {rtol:g}·|grad0| and energy <= {energy_rel:g}·energy0. "
        f"Gauss–Newton is{bound} {ratio:.1f}× faster."
    )
    if a.trace_json:
        gn_trace = gauss_newton_trace(gn, G0, targets, rtol)
        write_trace(a.trace_json, gn_trace, lb, t_setup,
                    f"seed problem: {G0.nnz} nonzeros of G ({p}×{q}), {gn.m} residuals")
    if not gn_ok:
        raise SystemExit(f"Gauss–Newton did not reach the goal: {res!r}")
    return res, lb


if __name__ == "__main__":
    main()
