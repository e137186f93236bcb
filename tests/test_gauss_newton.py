"""Tests for sparseopt_adapters._gauss_newton: routes, the sparse direct lineax solver, GN."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
import scipy.sparse as sp

import sparseopt_adapters as sa
from sparseopt_adapters._coloring import color_hessian

ROUTES = ["direct", "cg", "normal_cg", "lsmr"]


def dense_pattern(fn, x):
    """Exact pattern of a flat residual by dense jacfwd (independent of detection)."""
    return sa.SparsityPattern.from_dense(np.asarray(jax.jacfwd(fn)(x)) != 0)


def seed_problem(rng, p=13, q=6, n_y=7, n_b=8, selection=False, n_ops=2):
    """E(g) = sum_k ||X_k - Y G^T L_k G B||^2 with a reachable target (well posed for n_ops=2).

    G is p x q with a random 2-per-row pattern, L_k are p x p sparse and non-symmetric, Y is
    n_y x q and B is q x n_b (dense, or selections of rows/columns).
    """
    rows = np.repeat(np.arange(p), 2)
    cols = np.concatenate([rng.choice(q, 2, replace=False) for _ in range(p)])
    Ls = [
        (sp.random_array((p, p), density=0.3, random_state=k, format="csr") + 2 * sp.eye_array(p))
        for k in range(n_ops)
    ]
    if selection:
        Y = sp.csr_array(
            (np.ones(n_y), (np.arange(n_y), np.sort(rng.choice(q, n_y, replace=False)))),
            shape=(n_y, q),
        )
        B = sp.csr_array(
            (np.ones(n_b), (np.sort(rng.choice(q, n_b, replace=False)), np.arange(n_b))),
            shape=(q, n_b),
        )
    else:
        Y, B = rng.standard_normal((n_y, q)), rng.standard_normal((q, n_b))

    def model(G):
        outs = []
        for L in Ls:
            M = (Y @ (G.T @ L @ G)) @ B
            outs.append(M.todense() if isinstance(M, sa.PatternMatrix) else M)
        return jnp.stack(outs)

    gstar = rng.standard_normal(rows.size)
    Gstar = sa.PatternMatrix(gstar, rows, cols, (p, q))
    X = np.asarray(model(Gstar))

    def residual(G, X):
        return model(G) - X

    G0 = sa.PatternMatrix(Gstar.values + 0.05 * rng.standard_normal(rows.size), Gstar.pattern)
    flat = lambda v: residual(sa.PatternMatrix(v, G0.pattern), X).ravel()  # noqa: E731
    return residual, G0, X, Gstar, flat


@pytest.mark.parametrize("selection", [False, True], ids=["dense_YB", "selection_YB"])
@pytest.mark.parametrize("damping", [0.0, 0.3])
def test_all_routes_give_the_same_step(rng, selection, damping):
    kw = dict(n_y=6, n_b=6) if selection else {}
    residual, G0, X, _, flat = seed_problem(rng, selection=selection, **kw)
    J = np.asarray(jax.jacfwd(flat)(G0.values))
    assert np.linalg.matrix_rank(J) == J.shape[1], "test problem must be well posed"
    if selection:
        assert np.count_nonzero(J) < J.size / 2
    r = np.asarray(flat(G0.values))
    expected = np.linalg.solve(J.T @ J + damping * np.eye(J.shape[1]), -J.T @ r)
    pattern = dense_pattern(flat, G0.values)
    for route in ROUTES:
        delta = sa.gauss_newton_step(
            residual, G0, X, route=route, damping=damping, pattern=pattern, linear_rtol=1e-13
        )
        assert isinstance(delta, sa.PatternMatrix)
        err = np.linalg.norm(delta.values - expected) / np.linalg.norm(expected)
        assert err < 1e-10, f"route {route}: relative error {err:.2e}"


def test_operators_match_dense(rng):
    residual, G0, X, _, flat = seed_problem(rng)
    J = np.asarray(jax.jacfwd(flat)(G0.values))
    Jop, r = sa.jacobian_operator(residual, G0, X)
    np.testing.assert_allclose(Jop.as_matrix(), J, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r, flat(G0.values), rtol=1e-14)
    N = sa.normal_operator(residual, G0, X, damping=0.5)
    np.testing.assert_allclose(N.as_matrix(), J.T @ J + 0.5 * np.eye(J.shape[1]), rtol=1e-12)
    assert lx.is_symmetric(N) and lx.is_positive_semidefinite(N)


@pytest.mark.parametrize("route", ROUTES + ["auto"])
def test_gauss_newton_converges_on_pytree(rng, route):
    residual, G0, X, Gstar, flat = seed_problem(rng, selection=True, n_y=6, n_b=6)
    w_true = jnp.array([0.5, -1.0])

    def res_tree(params, X):  # a pytree with a PatternMatrix, a dense array and a Fixed leaf
        scale = params["scale"]  # Fixed: arrives unwrapped
        return {"fit": residual(params["G"], X) * scale, "w": params["w"] - w_true}

    x0 = {"G": G0, "w": jnp.zeros(2), "scale": sa.Fixed(2.0)}
    pattern = None
    if route in ("direct", "auto"):
        flat_x, unravel = sa.ravel_parameters(x0)

        def flat_res(v):
            t = res_tree(sa.unwrap_fixed(unravel(v)), X)
            return jnp.concatenate([t["fit"].ravel(), t["w"]])

        pattern = dense_pattern(flat_res, flat_x)
    res = sa.gauss_newton(res_tree, x0, X, route=route, rtol=1e-10, pattern=pattern)
    assert res.success, res
    assert res.n_steps <= 12
    assert res.energy < 1e-20 * max(1.0, res.energies[0])
    assert isinstance(res.x["scale"], sa.Fixed) and res.x["scale"].value == 2.0
    np.testing.assert_allclose(res.x["w"], w_true, atol=1e-10)
    # the fit is reachable: energy -> 0 (g itself may differ from g* by a discrete symmetry)
    np.testing.assert_allclose(residual(res.x["G"], X), 0.0, atol=1e-9)
    assert res.grad_norms[-1] <= 1e-10 * res.grad_norms[0]


def test_auto_chooses_from_structure(rng):
    # tiny dense Jacobian: assembling it (n JVPs) is cheap -> direct
    residual, G0, X, _, flat = seed_problem(rng, selection=False)
    small = sa.GaussNewton(residual, G0, X)
    assert small.n_colors == small.n and small.route == "direct", small
    # large dense Jacobian: four probing JVPs see dense columns -> lsmr, no detection
    A = rng.standard_normal((700, 400))
    big = sa.GaussNewton(lambda x: A @ jnp.tanh(x) - 1.0, jnp.zeros(400))
    assert big.route == "lsmr" and big.pattern is None and big.probe_density > 0.9, big
    # a banded residual: 3 colors -> direct
    f = lambda x: x[1:] - 0.5 * x[:-1] ** 2 + jnp.roll(x, 1)[1:]  # noqa: E731
    gn = sa.GaussNewton(f, jnp.linspace(0.1, 1.0, 4000))
    assert gn.route == "direct" and gn.n_colors <= 4, gn


def test_gauss_newton_step_api_errors(rng):
    residual, G0, X, _, flat = seed_problem(rng)
    with pytest.raises(ValueError, match="route must be one of"):
        sa.GaussNewton(residual, G0, X, route="qr")
    wrong = sa.SparsityPattern.identity(3)
    with pytest.raises(ValueError, match=r"pattern has shape \(3, 3\)"):
        sa.gauss_newton_step(residual, G0, X, route="direct", pattern=wrong)


# -- the sparse direct lineax solver --------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 7), (11, 6), (5, 9)], ids=["square", "tall", "wide"])
@pytest.mark.parametrize("mode", ["forward", "reverse", "bidirectional"])
def test_sparse_direct_solver(rng, shape, mode):
    m, n = shape
    A = sp.random_array(shape, density=0.35, random_state=3).toarray()
    A[np.arange(min(m, n)), np.arange(min(m, n))] += 3.0
    op = lx.MatrixLinearOperator(jnp.asarray(A))
    solver = sa.SparseDirectSolver(sa.SparsityPattern.from_dense(A), mode=mode)
    b = rng.standard_normal(m)
    x = jax.jit(lambda b: lx.linear_solve(op, b, solver).value)(b)
    np.testing.assert_allclose(x, np.linalg.lstsq(A, b, rcond=None)[0], rtol=1e-10, atol=1e-12)
    # vmap over right-hand sides and grad through the solve
    bs = rng.standard_normal((3, m))
    xs = jax.vmap(lambda b: lx.linear_solve(op, b, solver).value)(bs)
    np.testing.assert_allclose(xs, np.linalg.lstsq(A, bs.T, rcond=None)[0].T, rtol=1e-10)
    if m == n:
        g = jax.grad(lambda b: jnp.sum(lx.linear_solve(op, b, solver).value ** 2))(b)
        Ai = np.linalg.inv(A)
        np.testing.assert_allclose(g, 2 * Ai.T @ (Ai @ b), rtol=1e-9)


def test_sparse_direct_solver_symmetric_pytree_and_singular(rng):
    n = 6
    T = sp.diags_array([-np.ones(n - 1), 2.5 * np.ones(n), -np.ones(n - 1)], offsets=[-1, 0, 1])
    A = T.toarray()

    def mv(tree):  # operator on a pytree {a: (2,), b: (4,)}
        v = jnp.concatenate([tree["a"], tree["b"]])
        w = jnp.asarray(A) @ v
        return {"a": w[:2], "b": w[2:]}

    struct = {
        "a": jax.ShapeDtypeStruct((2,), jnp.float64),
        "b": jax.ShapeDtypeStruct((4,), jnp.float64),
    }
    op = lx.FunctionLinearOperator(mv, struct, tags=lx.symmetric_tag)
    solver = sa.SparseDirectSolver(sa.SparsityPattern.from_scipy(T))
    assert solver.n_colors == 3
    b = rng.standard_normal(n)
    sol = lx.linear_solve(op, {"a": b[:2], "b": b[2:]}, solver)
    np.testing.assert_allclose(
        np.concatenate([sol.value["a"], sol.value["b"]]), np.linalg.solve(A, b), rtol=1e-12
    )
    S = np.diag([1.0, 0.0, 2.0])
    sol = lx.linear_solve(
        lx.MatrixLinearOperator(jnp.asarray(S)),
        jnp.ones(3),
        sa.SparseDirectSolver(sa.SparsityPattern.identity(3)),
        throw=False,
    )
    # singular: the minimum-norm least-squares solution, not NaN (issue 13)
    assert sol.result == lx.RESULTS.successful
    np.testing.assert_allclose(sol.value, [1.0, 0.0, 0.5], rtol=1e-12, atol=1e-14)
    sol = lx.linear_solve(  # a non-finite operator is what "singular" now reports
        lx.MatrixLinearOperator(jnp.asarray(np.diag([1.0, np.inf, 2.0]))),
        jnp.ones(3),
        sa.SparseDirectSolver(sa.SparsityPattern.identity(3)),
        throw=False,
    )
    assert sol.result == lx.RESULTS.singular
    with pytest.raises(ValueError, match="needs a Jacobian coloring"):
        sa.SparseDirectSolver(color_hessian(sa.SparsityPattern.from_scipy(T)))
    with pytest.raises(TypeError, match="SparsityPattern"):
        sa.SparseDirectSolver(A)


def test_adaptive_damping_converges(rng):
    residual, G0, X, _, flat = seed_problem(rng, selection=True, n_y=6, n_b=6)
    pattern = dense_pattern(flat, G0.values)
    for route in ("direct", "cg"):
        res = sa.gauss_newton(
            residual, G0, X, route=route, damping="adaptive", pattern=pattern, rtol=1e-10
        )
        assert res.success, res
        np.testing.assert_allclose(residual(res.x, X), 0.0, atol=1e-9)
    with pytest.raises(ValueError, match="'adaptive'"):
        sa.gauss_newton(residual, G0, X, route="cg", damping="lm")


def test_main_example_small():
    """The README's main example at --small: exit 0 (Gauss–Newton reached the goal)."""
    import os
    import pathlib
    import re
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, str(root / "examples" / "sparse_operator_fit.py"), "--small"]
        + ["--lbfgs-budget", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "route 'direct'" in out.stdout, out.stdout
    m = re.search(
        r"Gauss–Newton: (\d+) iterations, .*\(rel (\S+)\), \|grad\| rel (\S+),", out.stdout
    )
    assert m, out.stdout
    assert float(m.group(2)) <= 1e-10 and float(m.group(3)) <= 1e-8
    assert "L-BFGS" in out.stdout and "faster" in out.stdout
