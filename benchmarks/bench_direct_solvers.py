"""Direct solvers for the Gauss–Newton step: factorisation time, steps and final energy.

Issue 13: the direct route must be correct on rank-deficient and underdetermined ``J``. Each
backend of ``sparseopt_adapters._direct.lstsq`` (``superlu``: regularised ``JᵀJ + δI`` by
SuperLU in symmetric mode; ``qdldl``: the same by qdldl's LDLᵀ with AMD; ``qdldl_augmented``:
qdldl on the quasi-definite ``[[I, J], [Jᵀ, −δI]]``; ``plain``: the old unregularised normal
equations) is timed on the Jacobian at the start (median of repeats: one factorisation plus the
refinement solves) and then drives a full default ``sa.gauss_newton`` solve
(``direct_backend=...``): steps, ``E/E0`` and success. Problems: the main example
(``examples/sparse_operator_fit.py``: ``Y = B = I``, full column rank) and a rank-deficient
seed variant (``Y``, ``B`` select the coarse nodes ``S`` with index ≡ 0 mod 3: the columns of
``G`` outside ``S`` are unused, ``JᵀJ`` is singular).

Run: ``OPENBLAS_NUM_THREADS=1 python benchmarks/bench_direct_solvers.py [--quick]``.
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

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

import sparseopt_adapters as sa  # noqa: E402
from sparseopt_adapters._direct import lstsq  # noqa: E402

_EX = pathlib.Path(__file__).parents[1] / "examples" / "sparse_operator_fit.py"
_spec = importlib.util.spec_from_file_location("sparse_operator_fit", _EX)
ex = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ex)

BACKENDS = ("superlu", "qdldl", "qdldl_augmented", "plain")


def main_example(nc):
    residual, G0, targets, _ = ex.make_problem(nc, 1000.0, 0.05)
    return "main example", residual, G0, targets


def rank_deficient(nc):
    """Y GᵀLₖG B with Y, B selecting the coarse nodes S (index ≡ 0 mod 3)."""
    _, G0, _, Gstar = ex.make_problem(nc, 1000.0, 0.05)
    Ls = ex.mesh_operators(2 * nc - 1, 1000.0)
    q = G0.shape[1]
    S = np.arange(0, q, 3)
    Ysel = sp.csr_array((np.ones(S.size), (np.arange(S.size), S)), shape=(S.size, q))

    def residual(G, targets):
        out = []
        for L, X in zip(Ls, targets, strict=True):
            M = Ysel @ (G.T @ L @ G) @ Ysel.T
            out.append((M.todense() if isinstance(M, sa.PatternMatrix) else M) - X)
        return out

    targets = [
        np.asarray((lambda M: M.todense() if isinstance(M, sa.PatternMatrix) else M)(
            Ysel @ (Gstar.T @ L @ Gstar) @ Ysel.T))
        for L in Ls
    ]
    return "rank-deficient seed (Y=B=select S)", residual, G0, targets


def jacobian_at(residual, G0, targets):
    def flat(v):
        r = residual(sa.PatternMatrix(v, G0.pattern), targets)
        return jnp.concatenate([jnp.ravel(x) for x in r])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        jac = sa.sparse_jacobian(flat, G0.values)
    J = jac(G0.values)
    p = jac.pattern
    vals = np.asarray(J.values if hasattr(J, "values") else J.data)
    A = sp.csr_array((vals, (p.rows, p.cols)), shape=p.shape)
    return A, np.asarray(flat(G0.values))


def run(problem, repeats):
    name, residual, G0, targets = problem
    A, r = jacobian_at(residual, G0, targets)
    m, n = A.shape
    dense_rank = None
    if n <= 3000:
        dense_rank = int(np.linalg.matrix_rank(A.toarray()))
    print(f"\n{name}: J {m}×{n}, nnz {A.nnz}" + (f", rank {dense_rank}" if dense_rank else ""))
    print(f"{'backend':17s} {'factor+solve s':>14s} {'refine':>6s} {'steps':>5s} "
          f"{'E/E0':>9s} {'success':>7s} {'GN wall s':>9s}")
    for backend in BACKENDS:
        times, stats = [], {}
        for _ in range(repeats):
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                lstsq(A, -r, backend=backend, stats=stats)
            times.append(time.perf_counter() - t0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sa.gauss_newton(residual, G0, targets, direct_backend=backend, rtol=1e-10)
        e_rel = res.energy / res.energies[0]
        print(f"{backend:17s} {statistics.median(times):14.4f} {stats.get('refinements', 0):6d} "
              f"{res.n_steps:5d} {e_rel:9.1e} {str(bool(res.success)):>7s} "
              f"{res.wall_time:9.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small meshes (nc=12)")
    ap.add_argument("--nc", type=int, default=None, help="coarse grid size (default 28)")
    a = ap.parse_args(argv)
    nc = a.nc or (12 if a.quick else 28)
    repeats = 3 if a.quick else 5
    print(f"direct solvers, nc={nc} (single-threaded BLAS; medians of {repeats})")
    for make in (main_example, rank_deficient):
        run(make(nc), repeats)


if __name__ == "__main__":
    main()
