"""Tests of sparseopt_adapters.optimistix against optimistix's own dense solvers."""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
import pytest
import scipy.sparse as sp

import sparseopt_adapters as sa
from sparseopt_adapters import optimistix as sa_optx
from sparseopt_adapters.optimistix import _least_squares
from sparseopt_adapters.optimistix._detect import operator_pattern
from sparseopt_adapters.optimistix._operator import SparseMatrixOperator

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOL = 1e-8  # agreement demanded between solutions
STOL = 1e-10  # solver tolerances (tighter, so that solutions agree to TOL)


def close(a, b, tol=TOL):
    """Max-norm agreement of two pytrees (PatternMatrix values included), relative to b."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    err = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(la, lb, strict=True))
    scale = max(1.0, max(float(jnp.max(jnp.abs(y))) for y in lb))
    assert err <= tol * scale, f"max difference {err:.3e} > {tol:.0e} (scale {scale:.2g})"


# ---------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------
def overdetermined(y, args):
    """A sparse, inconsistent nonlinear least-squares problem: m = 3n - 3 residuals."""
    return jnp.concatenate(
        [
            10.0 * (y[1:] - y[:-1] ** 2),
            args - y,
            0.5 * (y[:-2] * y[2:] - 0.9),
        ]
    )


Y0_OD = 0.9 * jnp.ones(9)
ARGS_OD = jnp.linspace(0.8, 1.2, 9)


def bratu(N, lam=6.0):
    h = 1.0 / (N + 1)

    def F(u, args):
        U = jnp.pad(u.reshape(N, N), 1)
        lap = U[2:, 1:-1] + U[:-2, 1:-1] + U[1:-1, 2:] + U[1:-1, :-2] - 4 * U[1:-1, 1:-1]
        return (lap / h**2 + lam * jnp.exp(U[1:-1, 1:-1])).reshape(-1)

    return F


def seed_problem(rng, selection):
    """E(g) = sum_k ||Y G^T L_k G B - X_k||^2 over the nonzeros g of G (a reachable target).

    ``selection=False``: a random 2-per-row pattern, random sparse L_k, dense Y and B -- every
    residual depends on every g (a dense Jacobian: the matrix-free route).
    ``selection=True``: a banded G, tridiagonal L_k, and Y, B selecting 90% of the rows and
    columns -- a sparse Jacobian with few colors (the sparse direct route).
    """
    p, q, n_ops = (13, 6, 2) if not selection else (24, 12, 4)
    rows = np.repeat(np.arange(p), 2)
    if selection:
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
        keep = int(0.9 * q)
        ys, bs = np.sort(rng.choice(q, keep, replace=False)), np.sort(rng.choice(q, keep, False))
        Y = sp.csr_array((np.ones(keep), (np.arange(keep), ys)), shape=(keep, q))
        B = sp.csr_array((np.ones(keep), (bs, np.arange(keep))), shape=(q, keep))
    else:
        cols = np.concatenate([rng.choice(q, 2, replace=False) for _ in range(p)])
        Ls = [
            sp.random_array((p, p), density=0.3, random_state=k, format="csr")
            + 2 * sp.eye_array(p)
            for k in range(n_ops)
        ]
        Y, B = rng.standard_normal((7, q)), rng.standard_normal((q, 8))

    def model(G):  # a list of n_ops matrices: a pytree residual
        outs = []
        for L in Ls:
            M = (Y @ (G.T @ L @ G)) @ B
            outs.append(M.todense() if isinstance(M, sa.PatternMatrix) else M)
        return outs

    def residual(G, X):
        return [M - Xk for M, Xk in zip(model(G), X, strict=True)]

    Gstar = sa.PatternMatrix(rng.standard_normal(rows.size), rows, cols, (p, q))
    X = [jnp.asarray(M) for M in model(Gstar)]
    G0 = sa.PatternMatrix(Gstar.values + 0.05 * rng.standard_normal(rows.size), rows, cols, (p, q))
    return residual, G0, X, Gstar


# ---------------------------------------------------------------------------------------
# same solutions as optimistix's dense solvers
# ---------------------------------------------------------------------------------------
_REFERENCES = {}


def dense_reference(solver):
    """optimistix's dense solution of the overdetermined problem (computed once per class)."""
    key = type(solver).__name__
    if key not in _REFERENCES:
        _REFERENCES[key] = optx.least_squares(overdetermined, solver, Y0_OD, ARGS_OD).value
    return _REFERENCES[key]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (sa_optx.GaussNewton(STOL, STOL), optx.GaussNewton(STOL, STOL)),
        (sa_optx.GaussNewton(STOL, STOL, route="cg"), optx.GaussNewton(STOL, STOL)),
        (sa_optx.GaussNewton(STOL, STOL, route="lsmr"), optx.GaussNewton(STOL, STOL)),
        (sa_optx.LevenbergMarquardt(STOL, STOL), optx.LevenbergMarquardt(STOL, STOL)),
        (sa_optx.Dogleg(STOL, STOL), optx.Dogleg(STOL, STOL)),
    ],
    ids=["GN-auto", "GN-cg", "GN-lsmr", "LM-auto", "Dogleg-auto"],
)
def test_overdetermined_least_squares_matches_dense(ours, theirs):
    plan = ours.plan(overdetermined, Y0_OD, ARGS_OD)
    assert plan.route == (ours.route if ours.route != "auto" else "direct")
    sol = optx.least_squares(overdetermined, ours, Y0_OD, ARGS_OD)
    assert sol.result == optx.RESULTS.successful
    close(sol.value, dense_reference(theirs))
    # a true least-squares solution: the gradient J^T r vanishes, the residual does not
    r, vjp = jax.vjp(lambda y: overdetermined(y, ARGS_OD), sol.value)
    assert float(jnp.max(jnp.abs(vjp(r)[0]))) < 1e-8
    assert float(jnp.linalg.norm(r)) > 1e-2


@pytest.mark.parametrize("selection", [False, True], ids=["dense_YB", "selection_YB"])
def test_seed_energy_with_pattern_matrix(rng, selection):
    residual, G0, X, Gstar = seed_problem(rng, selection)
    ours = sa_optx.LevenbergMarquardt(STOL, STOL)
    plan = ours.plan(residual, G0, X)
    n = G0.nnz
    if selection:  # sparse Jacobian: colors pay, sparse direct
        assert plan.route == "direct" and plan.n_colors < n / 2
        flat = lambda v: jnp.concatenate(  # noqa: E731
            [r.ravel() for r in residual(sa.PatternMatrix(v, G0.pattern), X)]
        )
        J = np.asarray(jax.jacfwd(flat)(G0.values))
        assert np.linalg.matrix_rank(J) == n, "the test problem must be well posed"
        dense_nnz = int(np.count_nonzero(J))
        assert plan.pattern.nnz == dense_nnz  # detection (closure constants by value) is exact
    else:  # every residual depends on every g: matrix-free
        assert plan.route == "lsmr" and plan.coloring is None
    sol = optx.least_squares(residual, ours, G0, X, max_steps=100)
    ref = optx.least_squares(residual, optx.LevenbergMarquardt(STOL, STOL), G0, X, max_steps=100)
    assert isinstance(sol.value, sa.PatternMatrix)
    assert sol.value.pattern == G0.pattern
    close(sol.value, ref.value)
    close(sol.value, Gstar, tol=1e-6)  # reachable target: the true nonzeros come back


def test_bratu_root_find_matches_dense_newton():
    N = 12
    F = bratu(N)
    u0 = jnp.zeros(N * N)
    ref = optx.root_find(F, optx.Newton(1e-10, 1e-10), u0)
    for solver in (sa_optx.GaussNewton(1e-10, 1e-10), sa_optx.LevenbergMarquardt(1e-10, 1e-10)):
        plan = solver.plan(F, u0)
        assert plan.route == "direct" and plan.n_colors == 5  # the 5-point stencil
        sol = optx.root_find(F, solver, u0)
        assert sol.result == optx.RESULTS.successful
        close(sol.value, ref.value)
        assert float(jnp.max(jnp.abs(F(sol.value, None)))) < 1e-7


def test_levenberg_marquardt_with_an_unused_parameter():
    # y[2] touches no residual: an empty Jacobian column, which only the damping rows fill
    fn = lambda y, args: jnp.array([y[0] ** 2 - 2.0, y[0] * y[1] - 1.0, y[1] ** 3])  # noqa: E731
    y0 = jnp.array([1.0, 0.5, 3.0])
    sol = optx.least_squares(fn, sa_optx.LevenbergMarquardt(STOL, STOL, route="direct"), y0)
    ref = optx.least_squares(fn, optx.LevenbergMarquardt(STOL, STOL), y0)
    close(sol.value, ref.value)
    assert float(sol.value[2]) == 3.0


def test_pytree_y0_args_and_aux(rng):
    p, q = 9, 5
    rows, cols = np.arange(p), rng.integers(0, q, p)
    idx = np.array([4, 0, 3, 1, 2])

    def fn(y, args):
        G, b = y["G"], y["b"]
        r1 = (G @ args["V"]) * jnp.exp(0.5 * b[idx]) - args["T"]
        r2 = 2.0 * (b[1:] - 0.5 * b[:-1] ** 2) - args["c"]
        return (r1, {"smooth": r2}), {"norm_b": jnp.sum(b**2)}

    G_true = sa.PatternMatrix(1.0 + 0.3 * rng.standard_normal(p), rows, cols, (p, q))
    b_true = 0.3 * rng.standard_normal(q)
    V = jnp.asarray(rng.standard_normal((q, q)))
    args = {"V": V, "T": jnp.zeros((p, q)), "c": jnp.zeros(q - 1)}
    (r1, r2), _ = fn({"G": G_true, "b": b_true}, args)
    args = {"V": V, "T": r1, "c": r2["smooth"]}  # a zero-residual problem
    y0 = {"G": sa.PatternMatrix(np.ones(p), rows, cols, (p, q)), "b": jnp.full(q, 0.1)}
    ours = optx.least_squares(fn, sa_optx.LevenbergMarquardt(STOL, STOL), y0, args, has_aux=True)
    ref = optx.least_squares(fn, optx.LevenbergMarquardt(STOL, STOL), y0, args, has_aux=True)
    assert isinstance(ours.value["G"], sa.PatternMatrix)
    close(ours.value, ref.value)
    close(ours.aux, ref.aux)
    # the pattern of J, flattened in jax.tree.leaves order, is the exact one
    plan = sa_optx.GaussNewton(STOL, STOL).plan(fn, y0, args, has_aux=True)
    flat, unravel = sa.ravel_parameters(y0)
    J = jax.jacfwd(lambda v: jax.flatten_util.ravel_pytree(fn(unravel(v), args)[0])[0])(flat)
    assert plan.pattern == sa.SparsityPattern.from_dense(np.asarray(J) != 0)


def test_jit_vmap_and_no_retrace_per_step(monkeypatch):
    sa.clear_cache()  # an earlier test may have planned the same program
    traces = {"fn": 0, "detect": 0}
    detect = _least_squares.fn_pattern

    def counting_detect(*a, **kw):
        traces["detect"] += 1
        return detect(*a, **kw)

    monkeypatch.setattr(_least_squares, "fn_pattern", counting_detect)

    def fn(y, args):
        traces["fn"] += 1
        return overdetermined(y, args)

    solver = sa_optx.LevenbergMarquardt(STOL, STOL)

    @jax.jit
    def solve(y0, args):
        sol = optx.least_squares(fn, solver, y0, args, max_steps=200)
        return sol.value, sol.stats["num_steps"]

    value, steps = solve(Y0_OD, ARGS_OD)
    assert int(steps) >= 8  # many steps ...
    after_first = dict(traces)
    assert after_first["detect"] == 1  # ... one detection ...
    assert after_first["fn"] <= 3  # ... and fn traced a fixed number of times, not per step
    value2, _ = solve(Y0_OD * 1.01, ARGS_OD)
    assert traces == after_first  # a new start point: no retrace, no new detection
    close(value2, value, tol=1e-6)
    batched = jax.vmap(solve, in_axes=(None, 0))(Y0_OD, jnp.stack([ARGS_OD, ARGS_OD]))[0]
    close(batched[1], value)


# ---------------------------------------------------------------------------------------
# Newton for minimise
# ---------------------------------------------------------------------------------------
def test_newton_minimise_rosenbrock_and_bratu_energy():
    def rosenbrock(y, args):
        return jnp.sum(100.0 * (y[1:] - y[:-1] ** 2) ** 2 + (1.0 - y[:-1]) ** 2)

    sol = optx.minimise(rosenbrock, sa_optx.Newton(1e-12, 1e-12), jnp.zeros(8), max_steps=200)
    close(sol.value, jnp.ones(8))
    ref = optx.minimise(rosenbrock, optx.BFGS(1e-12, 1e-12), jnp.zeros(8), max_steps=1000)
    close(sol.value, ref.value, tol=1e-6)  # BFGS itself is only this accurate
    assert int(sol.stats["num_steps"]) < int(ref.stats["num_steps"])

    N = 8
    h = 1.0 / (N + 1)

    def energy(u, lam):  # its stationary points are the Bratu solutions
        U = jnp.pad(u.reshape(N, N), 1)
        gx, gy = U[1:, 1:-1] - U[:-1, 1:-1], U[1:-1, 1:] - U[1:-1, :-1]
        return 0.5 * jnp.sum(gx**2) + 0.5 * jnp.sum(gy**2) - h**2 * lam * jnp.sum(jnp.exp(u))

    sol = optx.minimise(energy, sa_optx.Newton(1e-12, 1e-12), jnp.zeros(N * N), 6.0)
    root = optx.root_find(bratu(N), optx.Newton(1e-12, 1e-12), jnp.zeros(N * N))
    close(sol.value, root.value)


def test_newton_is_safe_where_the_hessian_is_indefinite():
    def double_well(y, args):  # H = 12 y^2 - 4 + coupling: indefinite near y = 0
        return jnp.sum((y**2 - 1.0) ** 2) + 0.1 * jnp.sum((y[1:] - y[:-1]) ** 2)

    y0 = 0.01 * jnp.arange(1.0, 7.0)
    assert np.linalg.eigvalsh(np.asarray(jax.hessian(double_well)(y0, None))).min() < 0
    sol = optx.minimise(double_well, sa_optx.Newton(1e-10, 1e-10), y0, max_steps=100)
    assert sol.result == optx.RESULTS.successful
    assert float(jnp.max(jnp.abs(jax.grad(double_well)(sol.value, None)))) < 1e-8
    assert np.linalg.eigvalsh(np.asarray(jax.hessian(double_well)(sol.value, None))).min() > 0
    assert float(double_well(sol.value, None)) < float(double_well(y0, None))


def test_newton_with_pattern_matrix_parameters(rng):
    residual, G0, X, Gstar = seed_problem(rng, selection=True)
    energy = lambda G, X: sum(jnp.sum(r**2) for r in residual(G, X))  # noqa: E731
    sol = optx.minimise(energy, sa_optx.Newton(1e-12, 1e-12), G0, X, max_steps=100)
    assert isinstance(sol.value, sa.PatternMatrix)
    close(sol.value, Gstar, tol=1e-6)


# ---------------------------------------------------------------------------------------
# the lineax solver inside optimistix's own solvers
# ---------------------------------------------------------------------------------------
def test_sparse_direct_plugs_into_optimistix_solvers():
    p = sa.jacobian_sparsity(overdetermined, Y0_OD, ARGS_OD)
    # detected on the operator (GN), and a given pattern of J serving [J; √λ I] (LM)
    for cls, linear_solver in (
        (optx.GaussNewton, sa_optx.SparseDirect()),
        (optx.LevenbergMarquardt, sa_optx.SparseDirect(pattern=p)),
    ):
        sol = optx.least_squares(
            overdetermined, cls(STOL, STOL, linear_solver=linear_solver), Y0_OD, ARGS_OD
        )
        close(sol.value, dense_reference(cls(STOL, STOL)))
    N = 10
    F = bratu(N)
    solver = optx.Newton(1e-10, 1e-10, linear_solver=sa_optx.SparseDirect())
    sol = optx.root_find(F, solver, jnp.zeros(N * N))
    ref = optx.root_find(F, optx.Newton(1e-10, 1e-10), jnp.zeros(N * N))
    close(sol.value, ref.value)


def test_sparse_direct_finds_tight_operator_patterns():
    A = np.diag(np.arange(1.0, 7.0)) + np.diag(np.ones(5), 1)
    A[5, 0] = 2.0
    op = lx.MatrixLinearOperator(jnp.asarray(A))
    assert operator_pattern(op) == sa.SparsityPattern.from_dense(A)  # concrete zeros seen
    b = jnp.arange(6.0)
    sol = lx.linear_solve(op, b, sa_optx.SparseDirect())
    np.testing.assert_allclose(sol.value, np.linalg.solve(A, b), rtol=1e-12)
    F = bratu(6)
    jac = lx.JacobianLinearOperator(lambda u, a: F(u, a), jnp.zeros(36), None)
    assert operator_pattern(jac) == sa.jacobian_sparsity(F, jnp.zeros(36), None)


def test_sparse_matrix_operator_is_a_complete_lineax_operator():
    A = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.0], [0.0, 0.0, 2.0], [0.0, 5.0, 1.0]])
    p = sa.SparsityPattern.from_dense(A)
    vals = jnp.asarray(A[p.rows, p.cols])
    struct = jax.ShapeDtypeStruct((3,), jnp.float64)
    op = SparseMatrixOperator(vals, p, struct, jax.ShapeDtypeStruct((4,), jnp.float64))
    x = jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(op.mv(x), A @ x)
    np.testing.assert_allclose(op.as_matrix(), A)
    np.testing.assert_allclose(op.transpose().mv(jnp.arange(4.0)), A.T @ np.arange(4.0))
    S = A[:3]  # symmetric positive definite
    ps = sa.SparsityPattern.from_dense(S)
    sym = SparseMatrixOperator(jnp.asarray(S[ps.rows, ps.cols]), ps, struct,
                               tags=(lx.symmetric_tag, lx.positive_semidefinite_tag))
    assert lx.is_symmetric(sym) and lx.is_positive_semidefinite(sym) and not lx.is_diagonal(sym)
    assert lx.is_tridiagonal(sym)
    np.testing.assert_allclose(lx.diagonal(sym), np.diag(S))
    for got, want in zip(lx.tridiagonal(sym), (np.diag(S), np.diag(S, -1), np.diag(S, 1)),
                         strict=True):
        np.testing.assert_allclose(got, want)
    sol = lx.linear_solve(sym, jnp.ones(3), lx.AutoLinearSolver(well_posed=True))
    np.testing.assert_allclose(sol.value, np.linalg.solve(S, np.ones(3)), rtol=1e-12)


# ---------------------------------------------------------------------------------------
# failures: optimistix RESULTS and throw
# ---------------------------------------------------------------------------------------
def test_failures_report_through_results_and_throw():
    solver = sa_optx.GaussNewton(STOL, STOL)
    sol = optx.least_squares(overdetermined, solver, jnp.zeros(9), ARGS_OD, max_steps=2,
                             throw=False)
    assert sol.result == optx.RESULTS.nonlinear_max_steps_reached
    with pytest.raises(RuntimeError, match="maximum number of steps"):
        optx.least_squares(overdetermined, solver, jnp.zeros(9), ARGS_OD, max_steps=2)
    # J(0) = 0 for y**3 + 1: the minimum-norm Gauss-Newton step is 0 (no NaN, issue 13), the
    # solve cannot move, and it is reported as not solved
    cube = lambda y, args: y**3 + 1.0  # noqa: E731
    sol = optx.root_find(cube, sa_optx.GaussNewton(STOL, STOL, route="direct"), jnp.zeros(3),
                         throw=False, max_steps=5)
    assert sol.result != optx.RESULTS.successful
    assert np.all(np.isfinite(sol.value))


def test_bad_input_gets_clear_errors():
    with pytest.raises(ValueError, match="route must be one of"):
        sa_optx.GaussNewton(STOL, STOL, route="dense")
    with pytest.raises(TypeError, match="lineax solver"):
        sa_optx.LevenbergMarquardt(STOL, STOL, linear_solver="qr")
    wrong = sa.SparsityPattern.from_dense(np.eye(4))
    with pytest.raises(ValueError, match=r"pattern has shape \(4, 4\).*24×9"):
        optx.least_squares(overdetermined, sa_optx.GaussNewton(STOL, STOL, pattern=wrong),
                           Y0_OD, ARGS_OD)
    with pytest.raises(ValueError, match="scalar"):
        optx.minimise(lambda y, a: y**2, sa_optx.Newton(STOL, STOL), jnp.ones(3))
    with pytest.raises(TypeError, match="SparsityPattern"):
        sa_optx.SparseDirect(pattern=np.eye(3))
    with pytest.raises(ValueError, match="maps 3 inputs to 3 outputs"):
        lx.linear_solve(lx.MatrixLinearOperator(jnp.eye(3)), jnp.ones(3),
                        sa_optx.SparseDirect(pattern=wrong))


def test_example_runs_small():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "least_squares_optimistix.py"), "--small"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "converged" in out.stdout


# -- issue 13 --------------------------------------------------------------------------------

from seed_family import BUILDS, MEMBERS, seed_family  # noqa: E402


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("member", list(MEMBERS))
@pytest.mark.parametrize("solver_cls", [sa_optx.GaussNewton, sa_optx.LevenbergMarquardt])
def test_seed_family_solved_by_default(solver_cls, member, build):
    """Fails before issue 13 for GaussNewton (NaN direct step on the singular JᵀJ)."""
    residual, g0, X, _ = seed_family(member, build)
    e0 = float(jnp.sum(residual(g0, X) ** 2))
    sol = optx.least_squares(residual, solver_cls(1e-8, 1e-8), g0, X, max_steps=100)
    e = float(jnp.sum(residual(sol.value, X) ** 2))
    assert sol.result == optx.RESULTS.successful
    assert e <= 1e-12 * e0, (e, e0)


def test_route_vocabulary_and_rule_are_shared(monkeypatch):
    from sparseopt_adapters import _policy

    assert sa_optx.GaussNewton(STOL, STOL, route="normal_cg").route == "cg"
    residual, g0, X, _ = seed_family("tall_full", "pattern")
    assert sa.GaussNewton(residual, g0, X, route="normal_cg").route == "cg"
    monkeypatch.setattr(_policy, "choose_route", lambda **kw: "lsmr")
    sa.clear_cache()
    assert sa_optx.LevenbergMarquardt(STOL, STOL).plan(residual, g0, X).route == "lsmr"
    assert sa.GaussNewton(residual, g0, X).route == "lsmr"
    sa.clear_cache()


@pytest.mark.parametrize("solver_cls", [sa_optx.GaussNewton, sa_optx.LevenbergMarquardt])
def test_non_finite_direct_step_falls_back(monkeypatch, solver_cls):
    from sparseopt_adapters import _direct
    from sparseopt_adapters._policy import RouteFallbackWarning

    monkeypatch.setattr(_direct, "lstsq", lambda A, b, **kw: np.full(A.shape[1], np.nan))
    residual, g0, X, _ = seed_family("tall_full", "pattern")
    with pytest.warns(RouteFallbackWarning, match="not finite"):
        sol = optx.least_squares(residual, solver_cls(1e-8, 1e-8, route="direct"), g0, X)
    assert sol.result == optx.RESULTS.successful
    np.testing.assert_allclose(residual(sol.value, X), 0.0, atol=1e-8)


def test_float64_off_raises_up_front():
    jax.config.update("jax_enable_x64", False)
    try:
        fn = lambda y, args: y - 1.0  # noqa: E731
        with pytest.raises(RuntimeError, match="float64 is off"):
            optx.least_squares(fn, sa_optx.LevenbergMarquardt(1e-6, 1e-6), jnp.zeros(3))
        with pytest.raises(RuntimeError, match="float64 is off"):
            optx.minimise(lambda y, a: jnp.sum((y - 1.0) ** 2), sa_optx.Newton(1e-6, 1e-6),
                          jnp.zeros(3))
    finally:
        jax.config.update("jax_enable_x64", True)


def test_plan_is_reused_across_traces(monkeypatch):
    """Setup paid once: a retrace (new solver tolerances) reuses detection and coloring."""
    calls = {"n": 0}
    detect = _least_squares.fn_pattern

    def counting(*a, **kw):
        calls["n"] += 1
        return detect(*a, **kw)

    monkeypatch.setattr(_least_squares, "fn_pattern", counting)
    sa.clear_cache()
    residual, g0, X, _ = seed_family("tall_full", "pattern")
    optx.least_squares(residual, sa_optx.LevenbergMarquardt(1e-8, 1e-8), g0, X)
    first = sa.cache_info()
    assert calls["n"] == 1
    optx.least_squares(residual, sa_optx.LevenbergMarquardt(1e-9, 1e-9), g0, X)  # retraces
    assert calls["n"] == 1 and sa.cache_info()["hits"] == first["hits"] + 1
    residual2, g2, X2, _ = seed_family("tall_full", "pattern", p=11)  # a new shape misses
    optx.least_squares(residual2, sa_optx.LevenbergMarquardt(1e-8, 1e-8), g2, X2)
    assert calls["n"] == 2 and sa.cache_info()["misses"] == first["misses"] + 1
    sa.clear_cache()


def test_constructors_are_one():
    for cls in (sa_optx.GaussNewton, sa_optx.LevenbergMarquardt, sa_optx.Dogleg):
        assert "__init__" not in vars(cls)
