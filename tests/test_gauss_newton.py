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


# -- issue 13: the seed family by default, honest results ---------------------------------

from seed_family import BUILDS, MEMBERS, seed_family  # noqa: E402


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("member", list(MEMBERS))
def test_seed_family_solved_by_default(member, build):
    """Fails before issue 13: SuperLU on the singular JᵀJ returned NaN at step 0."""
    residual, g0, X, _ = seed_family(member, build)
    res = sa.gauss_newton(residual, g0, X)
    e0 = float(res.energies[0])
    assert res.success, res
    assert res.energy <= 1e-12 * e0, res


def test_direct_step_is_the_minimum_norm_step():
    residual, g0, X, _ = seed_family("tall_rank_deficient", "dense")
    J = np.asarray(jax.jacfwd(residual)(g0, X))
    assert np.linalg.matrix_rank(J) < J.shape[1]
    r = np.asarray(residual(g0, X))
    expected = np.linalg.lstsq(J, -r, rcond=None)[0]  # the minimum-norm step
    direct = sa.gauss_newton_step(residual, g0, X, route="direct")
    lsmr = sa.gauss_newton_step(residual, g0, X, route="lsmr", linear_rtol=1e-14)
    assert np.linalg.norm(lsmr - expected) <= 1e-8 * np.linalg.norm(expected)  # LSMR converged
    assert np.linalg.norm(direct - expected) <= 1e-8 * np.linalg.norm(expected)
    assert np.linalg.norm(direct - lsmr) <= 1e-8 * np.linalg.norm(lsmr)


def test_non_finite_energy_is_not_a_success():
    res = sa.gauss_newton(lambda x: jnp.log(x), jnp.zeros(3))
    assert not res.success
    assert "not finite" in res.message and "x0" in res.message


@pytest.mark.parametrize(
    "x0",
    [jnp.arange(3), {"a": sa.Fixed(jnp.ones(3))}, jnp.zeros(0)],
    ids=["int", "all_fixed", "empty"],
)
def test_no_float_parameters_raise(x0):
    with pytest.raises(ValueError, match="x0 has no floating-point entries"):
        sa.gauss_newton(lambda x: jnp.ones(2) * 2.0, x0)


@pytest.mark.parametrize("cast", [lambda y: jnp.floor(y).astype(int), lambda y: y > 0])
def test_integer_or_bool_residual_raises_naming_the_dtype(cast):
    with pytest.raises(TypeError, match="int64|bool"):
        sa.gauss_newton(lambda x: cast(x), jnp.ones(3))


def test_float64_off_raises_up_front():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match="float64 is off"):
            sa.gauss_newton(lambda x: x - 1.0, jnp.zeros(3))
    finally:
        jax.config.update("jax_enable_x64", True)


def test_float32_x0_converges_in_float64():
    """Fails before: the residual ran on float32 parameters, the line search could not
    decrease the energy below float32 rounding and reported failure."""
    residual, g0, X, _ = seed_family("tall_full", "dense")
    res = sa.gauss_newton(residual, g0.astype(jnp.float32), X.astype(np.float32))
    assert res.success, res
    assert res.x.dtype == jnp.float32
    t = jnp.linspace(0.0, 1.0, 20, dtype=jnp.float32)
    res = sa.gauss_newton(
        lambda y: y[0] * jnp.exp(y[1] * t) - 2.0 * jnp.exp(-1.5 * t),
        jnp.array([1.0, 0.0], jnp.float32),
    )
    assert res.success, res
    np.testing.assert_allclose(res.x, [2.0, -1.5], rtol=1e-5)


@pytest.mark.parametrize("damping", [0.1, "adaptive"])
def test_damping_with_an_unused_parameter(damping):
    """Fails before: "Invalid forward coloring" (the empty column kept color -1)."""
    res = sa.gauss_newton(lambda x: x[:2] - 1.0, jnp.zeros(3), damping=damping)
    assert res.success, res
    np.testing.assert_allclose(res.x, [1.0, 1.0, 0.0], atol=1e-9)


def test_damped_coloring_is_one_function():
    from sparseopt_adapters import _direct
    from sparseopt_adapters.optimistix import _linear

    assert _linear.damped_coloring is _direct.damped_coloring
    p = sa.SparsityPattern(np.array([0, 1, 1]), np.array([0, 0, 1]), (2, 4))  # 2 empty columns
    c = _direct.damped_coloring(sa.color_jacobian(p, mode="forward"))
    assert c.pattern.shape == (6, 4)
    A = np.zeros((6, 4))
    A[c.pattern.rows, c.pattern.cols] = np.arange(1, c.pattern.nnz + 1)
    solver = sa.SparseDirectSolver(c)  # a valid coloring: exact assembly
    sol = lx.linear_solve(lx.MatrixLinearOperator(jnp.asarray(A)), jnp.ones(6), solver)
    np.testing.assert_allclose(sol.value, np.linalg.lstsq(A, np.ones(6), rcond=None)[0],
                               rtol=1e-10)


def test_non_finite_step_falls_back_and_carries_on(monkeypatch, capsys):
    """Fails before: a NaN direct step stopped the solve ("linear solve failed")."""
    from sparseopt_adapters import _direct
    from sparseopt_adapters._policy import RouteFallbackWarning

    monkeypatch.setattr(_direct, "lstsq", lambda A, b, **kw: np.full(A.shape[1], np.nan))
    residual, g0, X, _ = seed_family("tall_full", "pattern")
    sa.clear_cache()
    with pytest.warns(RouteFallbackWarning, match="not finite"):
        res = sa.gauss_newton(residual, g0, X, route="direct", verbose=True)
    assert res.success, res
    assert res.route == "lsmr" and res.fallbacks
    assert "'direct' step was not finite at step 0" in res.message
    assert "recomputed it on the 'lsmr' route" in capsys.readouterr().out
    sa.clear_cache()


def test_setup_is_paid_once(monkeypatch):
    from sparseopt_adapters import _gauss_newton

    calls = {"n": 0}
    detect = _gauss_newton._detect_and_color

    def counting(*a, **kw):
        calls["n"] += 1
        return detect(*a, **kw)

    monkeypatch.setattr(_gauss_newton, "_detect_and_color", counting)
    residual, g0, X, _ = seed_family("tall_full", "dense")
    sa.clear_cache()
    sa.gauss_newton(residual, g0, X)
    first = sa.cache_info()
    assert calls["n"] == 1 and first["misses"] >= 1
    res = sa.gauss_newton(residual, g0 + 0.01, X * 1.0)  # same function, shapes, dtypes
    again = sa.cache_info()
    assert res.success and calls["n"] == 1
    assert again["hits"] == first["hits"] + 1 and again["misses"] == first["misses"]
    sa.gauss_newton(residual, g0, X, rtol=1e-9)  # solve options are not setup
    assert calls["n"] == 1
    sa.gauss_newton(residual, g0, X, route="lsmr")  # another route: another setup
    assert sa.cache_info()["misses"] > again["misses"]
    residual2, g2, X2, _ = seed_family("tall_full", "dense", p=11)  # a new shape misses
    n_miss = sa.cache_info()["misses"]
    sa.gauss_newton(residual2, g2, X2)
    assert calls["n"] == 2 and sa.cache_info()["misses"] > n_miss
    sa.set_cache_size(0)
    try:
        sa.gauss_newton(residual2, g2, X2)
        assert calls["n"] == 3  # opted out: set up anew
    finally:
        sa.set_cache_size(64)
        sa.clear_cache()


# -- the one-off cost of the main example (issue 14): counts, never timings ---------------
from helpers import count_compiles, counting, main_example  # noqa: E402


def _main_problem(nc=4):
    residual, G0, targets, _ = main_example().make_problem(nc, 1000.0, 0.05)
    return residual, G0, targets


def test_main_example_setup_compiles_nothing_and_traces_once():
    """Fails before: setup traced the residual 4 times (shape, probe, detection, the
    compressed Jacobian's check) and made ~20 XLA compilations (eager detection folds, the
    probe's gather, ravel, device copies)."""
    residual, G0, targets = _main_problem()
    fn, traces = counting(residual)
    with count_compiles() as compiles:
        gn = sa.GaussNewton(fn, G0, targets)
    assert gn.route == "direct" and gn.probe_density is not None
    assert len(traces) == 1
    assert len(compiles) == 0


def test_main_example_solve_is_one_executable_and_no_retrace():
    """Fails before: the first step compiled _step_impl, _energy_impl and four eager ops
    (norm, dot, add, multiply) and traced the residual twice more."""
    residual, G0, targets = _main_problem()
    fn, traces = counting(residual)
    gn = sa.GaussNewton(fn, G0, targets)
    with count_compiles() as compiles:
        first = gn.solve(G0, targets, max_steps=1)
    assert first.n_steps == 1
    assert len(compiles) == 1 and len(traces) == 1  # the step; the residual: setup only
    with count_compiles() as compiles:
        res = gn.solve(G0, targets, rtol=1e-8)
    assert res.success and res.energy <= 1e-10 * res.energies[0], res
    assert len(compiles) == 0 and len(traces) == 1
    with count_compiles() as compiles:
        delta, info = gn.step(G0, targets)  # the same executable
    assert len(compiles) == 0 and delta.values.shape == G0.values.shape
    # the same answer as the plain residual traced afresh (no jaxpr reuse)
    ref = sa.GaussNewton(residual, G0, targets)
    ref._traced.consts = None
    res_ref = ref.solve(G0, targets, rtol=1e-8)
    np.testing.assert_allclose(res.x.values, res_ref.x.values, rtol=1e-10, atol=1e-12)
    assert res.n_steps == res_ref.n_steps


def test_matrix_free_route_compiles_only_its_step():
    """One executable for a matrix-free solve: no direct-route code, no energy function."""
    residual, G0, targets = _main_problem()
    gn = sa.GaussNewton(residual, G0, targets, route="lsmr")
    with count_compiles() as compiles:
        res = gn.solve(G0, targets, rtol=1e-6, max_steps=5)
    assert res.n_steps >= 1
    assert len(compiles) == 1


def test_adaptive_damping_compiles_its_step_and_the_curvature_probe():
    residual, G0, targets = _main_problem()
    gn = sa.GaussNewton(residual, G0, targets)
    with count_compiles() as compiles:
        res = gn.solve(G0, targets, damping="adaptive", rtol=1e-8)
    assert res.success, res
    assert len(compiles) == 2  # the damped step, the mean-curvature estimate


def test_other_argument_dtypes_retrace_instead_of_reusing_the_jaxpr():
    """The setup jaxpr is for the example's shapes and dtypes; other ones trace afresh
    (as jax.jit would), and give the same step."""
    def residual(x, a):
        return x**2 - a

    gn = sa.GaussNewton(residual, jnp.ones(3), jnp.ones(3))
    assert gn._traced.matches((jnp.ones(3),))
    assert not gn._traced.matches((jnp.ones(3, jnp.float32),))
    assert not gn._traced.matches((jnp.ones(4),))
    a32 = jnp.array([4.0, 9.0, 16.0], jnp.float32)
    res = gn.solve(jnp.ones(3), a32, rtol=1e-12)
    assert res.success, res
    np.testing.assert_allclose(res.x, [2.0, 3.0, 4.0], rtol=1e-10)
