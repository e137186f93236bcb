"""Tests of sparseopt_adapters.scipy against dense JAX derivatives and known solutions."""

import pathlib
import subprocess
import sys
import tracemalloc

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import sparseopt_adapters as sa
from sparseopt_adapters import scipy as sa_scipy
from sparseopt_adapters.scipy import _impl

ROOT = pathlib.Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------
def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def coupled(x, a, s):
    """An asymmetric mix: chain terms, a long-range pair, an argument array and a scalar."""
    return (
        jnp.sum(jnp.sin(x[:-1] * x[1:]))
        + jnp.sum(a * jnp.exp(0.3 * x) * x**2)
        + s * x[0] * x[-1]
        + jnp.sum(x[::3] ** 3)
    )


bratu_residual = helpers.bratu_residual
bratu_reference = helpers.bratu_reference
HS071_X = helpers.HS071_X
HS071_F = helpers.HS071_F


def hs071_f(x):
    return x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2]


def hs071_ineq(x):
    return x[0] * x[1] * x[2] * x[3]


def hs071_eq(x):
    return jnp.sum(x**2)


# ---------------------------------------------------------------------------------------
# import hygiene
# ---------------------------------------------------------------------------------------
def test_import_isolation():
    code = (
        "import sys, sparseopt_adapters\n"
        "assert 'scipy.optimize' not in sys.modules, 'core imported scipy.optimize'\n"
        "import sparseopt_adapters.scipy as s\n"
        "import scipy.optimize\n"
        "assert 'sparseopt_adapters' not in scipy.optimize.__file__\n"
        "assert s.minimize and s.least_squares and s.derivatives\n"
        "from sparseopt_adapters import scipy as s2\n"
        "assert s2 is s\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr


# ---------------------------------------------------------------------------------------
# derivatives against dense JAX
# ---------------------------------------------------------------------------------------
def test_derivatives_match_dense_jax(rng):
    n = 13
    a = jnp.asarray(rng.uniform(0.5, 1.5, n))
    x = rng.normal(size=n)
    p = rng.normal(size=n)
    d = sa_scipy.derivatives(coupled, np.zeros(n), args=(a, 0.7))
    f = lambda z: coupled(z, a, 0.7)
    g_ref = np.asarray(jax.jit(jax.grad(f))(x))
    H_ref = np.asarray(jax.jit(jax.hessian(f))(x))
    assert abs(d.fun(x) - float(f(x))) < 1e-12
    np.testing.assert_allclose(d.jac(x), g_ref, rtol=0, atol=1e-10)
    H = d.hess(x)
    assert isinstance(H, sp.csr_array)
    assert H.dtype == np.float64
    np.testing.assert_allclose(H.toarray(), H_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(d.hessp(x, p), H_ref @ p, rtol=0, atol=1e-10)
    np.testing.assert_allclose(d.hess_operator(x) @ p, H_ref @ p, rtol=0, atol=1e-10)
    np.testing.assert_allclose(d.hess_dense(x), H_ref, rtol=0, atol=1e-10)
    # the pattern is sparse: chain + long-range pair + diagonal
    assert d.hess_pattern.nnz < n * n / 2
    assert d.n_colors < n


def test_derivatives_cache_fuses_fun_and_jac(rng):
    d = sa_scipy.derivatives(rosen, np.zeros(6))
    x = rng.normal(size=6)
    d.fun(x)
    d.jac(x)
    d.fun(list(x))
    assert d.counts["fun_grad"] == 1
    d.jac(x + 1.0)
    assert d.counts["fun_grad"] == 2
    # jac returns a copy: scipy may write into it
    g = d.jac(x + 1.0)
    g[:] = 0.0
    assert np.any(d.jac(x + 1.0) != 0.0)


def test_derivatives_reject_scipy_args():
    d = sa_scipy.derivatives(rosen, np.zeros(3))
    with pytest.raises(TypeError, match="pass args=... to"):
        so.minimize(d.fun, d.x0, args=(1.0,), jac=d.jac, method="BFGS")


def test_derivatives_bad_input():
    with pytest.raises(ValueError, match="must return a scalar"):
        sa_scipy.derivatives(lambda x: x**2, np.zeros(3))
    d = sa_scipy.derivatives(rosen, np.zeros(3))
    with pytest.raises(ValueError, match="vector of 3 entries"):
        d.jac(np.zeros(4))


def test_constraint_derivatives_match_dense_jax(rng):
    n = 11

    def c(x, w):
        pair = jnp.concatenate([jnp.sum(x**2)[None], jnp.sin(x[3] * x[7])[None]])
        return jnp.concatenate([x[:-1] * x[1:] * w, pair])

    w = 1.5
    con = sa_scipy.nonlinear_constraint(c, np.zeros(n), 0.0, 1.0, args=(w,))
    x = rng.normal(size=n)
    v = rng.normal(size=n + 1)
    J = con.jac(x)
    assert isinstance(J, sp.csr_array)
    np.testing.assert_allclose(J.toarray(), jax.jit(jax.jacfwd(lambda z: c(z, w)))(x), atol=1e-10)
    H = con.hess(x, v)
    assert sp.issparse(H)
    H_ref = jax.jit(jax.hessian(lambda z: jnp.dot(v, c(z, w))))(x)
    np.testing.assert_allclose(H.toarray(), H_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(con.fun(x), c(x, w), atol=1e-14)
    # the operator form, probed with int8 as scipy does
    op_con = sa_scipy.nonlinear_constraint(c, np.zeros(n), 0.0, 1.0, args=(w,),
                                           hessian="operator")
    Hop = op_con.hess(x, v)
    assert isinstance(Hop, spla.LinearOperator)
    e = np.ones(n, dtype=np.int8)
    np.testing.assert_allclose(Hop @ e, H_ref @ np.ones(n), atol=1e-10)
    np.testing.assert_allclose(Hop.matvec(np.zeros(n, dtype=np.int8)), 0.0)


def test_int8_probe(rng):
    n = 9
    d = sa_scipy.derivatives(rosen, np.zeros(n))
    x = rng.normal(size=n)
    z = d.hessp(x, np.zeros(n, dtype=np.int8))
    assert z.dtype == np.float64 and np.all(z == 0.0)
    # scipy's own probe: a LinearOperator built without dtype calls matvec(int8 zeros)
    op = spla.LinearOperator((n, n), matvec=lambda v: d.hessp(x, v))
    assert op.dtype == np.float64
    H = np.asarray(jax.jit(jax.hessian(rosen))(x))
    np.testing.assert_allclose(d.hess_operator(x) @ np.arange(n, dtype=np.int8),
                               H @ np.arange(n), atol=1e-9)


# ---------------------------------------------------------------------------------------
# minimize
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method",
    ["trust-constr", "Newton-CG", "trust-krylov", "trust-ncg", "trust-exact", "L-BFGS-B", "BFGS"],
)
def test_rosenbrock_unconstrained(method):
    x0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2, 0.9])
    opts = {
        "trust-constr": {"gtol": 1e-10, "xtol": 1e-14},
        "Newton-CG": {"xtol": 1e-12},
        "L-BFGS-B": {"ftol": 1e-15, "gtol": 1e-10},
        "trust-krylov": {"gtol": 1e-8},
    }.get(method, {"gtol": 1e-10})
    res = sa_scipy.minimize(rosen, x0, method=method, options={"maxiter": 5000, **opts})
    np.testing.assert_allclose(res.x, np.ones(6), atol=1e-5)
    if method == "trust-constr":
        assert res.nhev > 0  # our Hessian was used, not a quasi-Newton approximation
        assert res.derivatives.counts["hess"] > 0


def test_rosenbrock_hessian_operator():
    x0 = np.array([1.3, 0.7, 0.8, 1.9])
    res = sa_scipy.minimize(rosen, x0, hessian="operator", options={"gtol": 1e-10})
    np.testing.assert_allclose(res.x, np.ones(4), atol=1e-6)
    assert res.derivatives.counts["hessp"] > 0 and res.derivatives.counts["hess"] == 0


@pytest.mark.parametrize("as_pairs", [False, True])
@pytest.mark.parametrize("method", ["trust-constr", "L-BFGS-B"])
def test_bound_constrained(method, as_pairs):
    """Reference: the same scipy method with scipy's exact dense Rosenbrock derivatives."""
    n = 8
    lo, hi = -2.0 * np.ones(n), 2.0 * np.ones(n)
    hi[3] = 0.5
    lo[6] = 1.2  # active at the solution
    x0 = np.full(n, 0.3)
    if method == "trust-constr":
        opts = {"gtol": 1e-10, "xtol": 1e-14, "maxiter": 3000}
        extra = {"hess": so.rosen_hess}
    else:
        opts = {"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000}
        extra = {}
    ref = so.minimize(so.rosen, x0, jac=so.rosen_der, method=method, bounds=so.Bounds(lo, hi),
                      options=opts, **extra)
    bounds = list(zip(lo, hi, strict=True)) if as_pairs else so.Bounds(lo, hi)
    res = sa_scipy.minimize(rosen, x0, method=method, bounds=bounds, options=opts)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert abs(res.fun - ref.fun) < 1e-9
    assert res.x[3] <= 0.5 + 1e-12 and res.x[6] >= 1.2 - 1e-12


@pytest.mark.parametrize("form", ["nonlinear", "dict"])
def test_equality_constrained(rng, form):
    """min ‖x − a‖² s.t. ‖x‖² = 1: x* = a / ‖a‖."""
    n = 30
    a = rng.normal(size=n)
    f = lambda x, a: jnp.sum((x - a) ** 2)
    c = lambda x: jnp.sum(x**2) - 1.0
    con = so.NonlinearConstraint(c, 0.0, 0.0) if form == "nonlinear" else {"type": "eq", "fun": c}
    res = sa_scipy.minimize(f, np.ones(n) / np.sqrt(n), args=(jnp.asarray(a),),
                            constraints=[con], options={"gtol": 1e-12, "xtol": 1e-14})
    assert res.success, res.message
    np.testing.assert_allclose(res.x, a / np.linalg.norm(a), atol=1e-7)


def test_equality_constrained_slsqp(rng):
    n = 10
    a = rng.normal(size=n)
    res = sa_scipy.minimize(lambda x: jnp.sum((x - a) ** 2), np.ones(n) / np.sqrt(n),
                            method="SLSQP",
                            constraints={"type": "eq", "fun": lambda x: jnp.sum(x**2) - 1.0},
                            options={"ftol": 1e-14})
    np.testing.assert_allclose(res.x, a / np.linalg.norm(a), atol=1e-6)


def _hs071_scipy_dense(options):
    """trust-constr on HS071 with hand-written dense derivatives (the reference)."""

    def f(x):
        return x[0] * x[3] * np.sum(x[:3]) + x[2]

    def g(x):
        return np.array([x[3] * np.sum(x[:3]) + x[0] * x[3], x[0] * x[3], x[0] * x[3] + 1.0,
                         x[0] * np.sum(x[:3])])

    def H(x):
        s = 2 * x[0] + x[1] + x[2]
        return np.array([[2 * x[3], x[3], x[3], s], [x[3], 0, 0, x[0]], [x[3], 0, 0, x[0]],
                         [s, x[0], x[0], 0]])

    def Hprod(x, v):
        M = np.zeros((4, 4))
        for i in range(4):
            for j in range(4):
                if i != j:
                    M[i, j] = np.prod([x[k] for k in range(4) if k not in (i, j)])
        return v[0] * M

    cons = [so.NonlinearConstraint(lambda x: np.array([np.prod(x)]), 25.0, np.inf,
                                   jac=lambda x: (np.prod(x) / x)[None], hess=Hprod),
            so.NonlinearConstraint(lambda x: np.array([np.sum(x**2)]), 40.0, 40.0,
                                   jac=lambda x: 2 * x[None],
                                   hess=lambda x, v: 2 * v[0] * np.eye(4))]
    return so.minimize(f, np.array([1.0, 5.0, 5.0, 1.0]), jac=g, hess=H, method="trust-constr",
                       bounds=so.Bounds(np.ones(4), 5 * np.ones(4)), constraints=cons,
                       options=options)


@pytest.mark.parametrize("form", ["nonlinear", "dict"])
def test_hs071_inequality(form):
    bounds = so.Bounds(np.ones(4), 5 * np.ones(4))
    if form == "nonlinear":
        cons = [so.NonlinearConstraint(hs071_ineq, 25.0, np.inf),
                so.NonlinearConstraint(hs071_eq, 40.0, 40.0)]
    else:
        cons = [{"type": "ineq", "fun": lambda x, k: hs071_ineq(x) - k, "args": (25.0,)},
                {"type": "eq", "fun": lambda x: hs071_eq(x) - 40.0}]
    opts = {"gtol": 1e-10, "xtol": 1e-14, "maxiter": 2000}
    res = sa_scipy.minimize(hs071_f, np.array([1.0, 5.0, 5.0, 1.0]), bounds=bounds,
                            constraints=cons, options=opts)
    ref = _hs071_scipy_dense(opts)
    # same algorithm, same exact derivatives: the same iterates
    assert res.nit == ref.nit
    np.testing.assert_allclose(res.x, ref.x, atol=1e-9)
    assert abs(res.fun - ref.fun) < 1e-9
    # and the known optimum (trust-constr stops at barrier parameter ~6e-6)
    assert abs(res.fun - HS071_F) < 1e-4
    np.testing.assert_allclose(res.x, HS071_X, atol=1e-4)


def test_hs071_slsqp_against_scipy_dense():
    """Same problem through SLSQP; reference: SLSQP with hand-written dense derivatives."""
    x0 = np.array([1.0, 5.0, 5.0, 1.0])
    bnds = [(1.0, 5.0)] * 4

    def f_np(x):
        return x[0] * x[3] * np.sum(x[:3]) + x[2]

    def g_np(x):
        return np.array([x[3] * np.sum(x[:3]) + x[0] * x[3], x[0] * x[3],
                         x[0] * x[3] + 1.0, x[0] * np.sum(x[:3])])

    ref = so.minimize(f_np, x0, jac=g_np, method="SLSQP", bounds=bnds, constraints=[
        {"type": "ineq", "fun": lambda x: np.prod(x) - 25.0,
         "jac": lambda x: np.prod(x) / x},
        {"type": "eq", "fun": lambda x: np.sum(x**2) - 40.0, "jac": lambda x: 2 * x}],
        options={"ftol": 1e-12})
    res = sa_scipy.minimize(hs071_f, x0, method="SLSQP", bounds=bnds, constraints=[
        so.NonlinearConstraint(hs071_ineq, 25.0, np.inf),
        {"type": "eq", "fun": lambda x: hs071_eq(x) - 40.0}], options={"ftol": 1e-12})
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert abs(res.fun - HS071_F) < 1e-5


def test_linear_constraint_passthrough_and_cobyqa():
    A = np.array([[1.0, 1.0, 1.0]])
    lin = so.LinearConstraint(A, 1.0, 1.0)
    res = sa_scipy.minimize(lambda x: jnp.sum(x**2), np.array([1.0, 0.0, 0.0]), constraints=lin,
                            options={"gtol": 1e-12})
    np.testing.assert_allclose(res.x, np.ones(3) / 3, atol=1e-7)
    res = sa_scipy.minimize(lambda x: jnp.sum(x**2), np.array([1.0, 0.0, 0.0]), method="COBYQA",
                            constraints={"type": "eq", "fun": lambda x: jnp.sum(x) - 1.0})
    np.testing.assert_allclose(res.x, np.ones(3) / 3, atol=1e-5)


def test_pytree_x0_with_pattern_matrix(rng):
    """x0 = {'G': PatternMatrix, 'b': array}: res.x keeps the structure."""
    rows, cols = np.array([0, 0, 1, 2, 2]), np.array([0, 2, 1, 0, 2])
    target = rng.normal(size=5)
    G0 = sa.PatternMatrix(np.zeros(5), rows, cols, (3, 3))
    x0 = {"G": G0, "b": jnp.zeros(2), "L": sa.Fixed(jnp.eye(3))}

    def f(p):
        G, b, L = p["G"], p["b"], p["L"]
        return (jnp.sum((G.values - target) ** 2) + jnp.sum((b - 1.0) ** 2)
                + 0.0 * jnp.sum(L @ G.todense()))

    res = sa_scipy.minimize(f, x0, options={"gtol": 1e-12})
    assert isinstance(res.x["G"], sa.PatternMatrix)
    np.testing.assert_allclose(res.x["G"].values, target, atol=1e-8)
    np.testing.assert_allclose(res.x["b"], 1.0, atol=1e-8)
    assert isinstance(res.x["L"], sa.Fixed)
    assert res.x_flat.shape == (7,)


def test_nd_array_x0_keeps_shape():
    x0 = np.zeros((2, 3))
    res = sa_scipy.minimize(lambda X: jnp.sum((X - jnp.arange(6.0).reshape(2, 3)) ** 2), x0,
                            method="trust-krylov")
    assert res.x.shape == (2, 3)
    np.testing.assert_allclose(res.x, np.arange(6.0).reshape(2, 3), atol=1e-8)


def test_minimize_errors():
    with pytest.raises(TypeError, match="expected a scipy.optimize.NonlinearConstraint"):
        sa_scipy.minimize(rosen, np.zeros(3), constraints=[lambda x: x])
    with pytest.raises(ValueError, match=r"\['type'\] must be 'eq' or 'ineq'"):
        sa_scipy.minimize(rosen, np.zeros(3), constraints={"type": "le", "fun": rosen})
    with pytest.raises(ValueError, match="3 variables"):
        sa_scipy.minimize(rosen, np.zeros(3), bounds=[(0, 1)] * 2)
    with pytest.raises(ValueError, match="hessian must be"):
        sa_scipy.minimize(rosen, np.zeros(3), hessian="dense")
    with pytest.raises(ValueError, match="must return a scalar"):
        sa_scipy.minimize(lambda x: x, np.zeros(3))


# ---------------------------------------------------------------------------------------
# least_squares
# ---------------------------------------------------------------------------------------
def test_bratu_2d():
    N, lam = 20, 6.0
    res = sa_scipy.least_squares(bratu_residual, np.zeros(N * N), args=(lam, N))
    assert res.success
    assert isinstance(res.jac, sp.csr_array) or sp.issparse(res.jac)
    assert res.jacobian.n_colors <= 6
    assert np.max(np.abs(res.fun)) < 1e-8
    np.testing.assert_allclose(res.x, bratu_reference(N, lam), atol=1e-9)
    assert res.nfev < 20


def test_tr_options_default_and_override(monkeypatch):
    seen = {}
    real = so.least_squares

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(so, "least_squares", spy)
    monkeypatch.setattr(_impl, "EXACT_MAX_N", 0)  # LSMR even at this size
    r = lambda x: x[1:] - x[:-1] ** 2
    sa_scipy.least_squares(r, np.ones(5))  # m = 4, n = 5
    assert seen["tr_options"] == {"atol": 1e-12, "btol": 1e-12, "maxiter": 16}
    seen.clear()
    sa_scipy.least_squares(r, np.ones(5), tr_options={"atol": 1e-6, "maxiter": 50})
    assert seen["tr_options"] == {"atol": 1e-6, "btol": 1e-12, "maxiter": 50}
    seen.clear()
    sa_scipy.least_squares(r, np.ones(5), tr_solver="exact")
    assert "tr_options" not in seen


def test_overdetermined_fit(rng):
    """K independent curves y = a·exp(−b t) + c, 25 points each: a block-diagonal Jacobian.

    Reference: scipy least_squares with the dense JAX Jacobian.
    """
    K, T = 12, 25
    t = np.linspace(0.0, 3.0, T)
    true = np.stack([rng.uniform(1, 2, K), rng.uniform(0.5, 1.5, K), rng.uniform(-.5, .5, K)], 1)
    y = true[:, :1] * np.exp(-true[:, 1:2] * t) + true[:, 2:] + 0.01 * rng.normal(size=(K, T))

    def r(p, t, y):
        P = p.reshape(K, 3)
        return (P[:, :1] * jnp.exp(-P[:, 1:2] * t) + P[:, 2:] - y).reshape(-1)

    p0 = np.tile([1.0, 1.0, 0.0], K)
    tj, yj = jnp.asarray(t), jnp.asarray(y)
    res = sa_scipy.least_squares(r, p0, args=(tj, yj), xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert res.jacobian.n_colors == 3
    # t is known to detection: at t[0] = 0, ∂r/∂b = −a·t·exp(−b t) is a structural zero
    assert res.jacobian.nnz == K * T * 3 - K
    assert res.tr_solver == "exact"  # n = 36 <= EXACT_MAX_N: scipy got a dense Jacobian
    jac_ref = jax.jit(jax.jacfwd(r))
    ref = so.least_squares(lambda p: np.asarray(r(p, tj, yj)), p0,
                           jac=lambda p: np.asarray(jac_ref(p, tj, yj)),
                           xtol=1e-15, ftol=1e-15, gtol=1e-15)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-8)
    # lm densifies this small problem and agrees
    lm = sa_scipy.least_squares(r, p0, args=(tj, yj), method="lm", xtol=1e-15, ftol=1e-15)
    np.testing.assert_allclose(lm.x, ref.x, atol=1e-7)


def test_lm_too_large_raises(monkeypatch):
    monkeypatch.setattr(_impl, "DENSE_LIMIT", 10)
    with pytest.raises(ValueError, match="method='trf'"):
        sa_scipy.least_squares(lambda x: x**2 - 1.0, np.ones(5), method="lm")


def test_least_squares_refuses_jac():
    for key in ("jac", "jac_sparsity", "kwargs"):
        with pytest.raises(TypeError, match=f"{key}= is not accepted"):
            sa_scipy.least_squares(lambda x: x, np.ones(3), **{key: None})


def test_bounds_pass_through():
    r = lambda x: x - jnp.array([2.0, -3.0, 0.5])
    res = sa_scipy.least_squares(r, np.zeros(3), bounds=(-1.0, 1.0))
    np.testing.assert_allclose(res.x, [1.0, -1.0, 0.5], atol=1e-8)


def _seed_problem(rng):
    """E(g) = ‖X − Y GᵀLG B‖² with a selection Y, B = I: a sparse Jacobian in g."""
    p, q = 24, 16
    rows = np.repeat(np.arange(p), 2)
    cols = np.stack([np.arange(p) % q, (3 * np.arange(p) + 5) % q], 1).reshape(-1)
    key = np.unique(rows * q + cols)
    rows, cols = np.divmod(key, q)
    L = np.eye(p) * 2.0 + np.eye(p, k=1) * 0.5 - np.eye(p, k=-1) * 0.3
    Y = np.eye(q)[::2]  # select every other row
    B = np.eye(q)
    g_true = rng.normal(size=rows.size)
    Gt = sa.PatternMatrix(g_true, rows, cols, (p, q)).todense()
    X = Y @ Gt.T @ L @ Gt @ B
    return rows, cols, (p, q), jnp.asarray(L), jnp.asarray(Y), jnp.asarray(B), jnp.asarray(X), \
        g_true


def test_seed_energy_least_squares(rng):
    rows, cols, shape, L, Y, B, X, g_true = _seed_problem(rng)

    def residual(G, L, Y, B, X):
        return (Y @ (G.T @ (L @ (G @ B)))) - X

    G0 = sa.PatternMatrix(g_true + 0.05 * rng.normal(size=g_true.size), rows, cols, shape)
    res = sa_scipy.least_squares(residual, G0, args=(L, Y, B, X), xtol=1e-12, ftol=1e-12,
                                 gtol=1e-12)
    assert isinstance(res.x, sa.PatternMatrix)
    assert res.cost < 1e-20
    assert res.nfev < 50  # 714 with scipy's LSMR maxiter = min(m, n)
    # the Jacobian is sparse in g and equals dense jax
    assert res.jacobian.n_colors < g_true.size
    J = res.jac.toarray() if sp.issparse(res.jac) else res.jac
    J_ref = jax.jit(jax.jacfwd(lambda g: residual(sa.PatternMatrix(g, rows, cols, shape), L, Y,
                                                  B, X).reshape(-1)))(jnp.asarray(res.x_flat))
    np.testing.assert_allclose(J, J_ref, atol=1e-10)


def test_seed_energy_gradient_closed_form(rng):
    """∂E/∂g = 2·P·vec(LGBFᵀY + LᵀGYᵀFBᵀ), F = Y GᵀLG B − X (DESIGN.md)."""
    rows, cols, shape, L, Y, B, X, g_true = _seed_problem(rng)

    def E(G):
        return jnp.sum((Y @ (G.T @ (L @ (G @ B))) - X) ** 2)

    g = g_true + 0.3 * rng.normal(size=g_true.size)
    G = sa.PatternMatrix(g, rows, cols, shape)
    d = sa_scipy.derivatives(E, G)
    Gd = np.asarray(G.todense())
    Ln, Yn, Bn = np.asarray(L), np.asarray(Y), np.asarray(B)
    F = Yn @ Gd.T @ Ln @ Gd @ Bn - np.asarray(X)
    full = 2.0 * (Ln @ Gd @ Bn @ F.T @ Yn + Ln.T @ Gd @ Yn.T @ F @ Bn.T)
    np.testing.assert_allclose(d.jac(g), full[rows, cols], atol=1e-10)
    H = d.hess(g)
    H_ref = jax.jit(jax.hessian(lambda v: E(sa.PatternMatrix(v, rows, cols, shape))))(g)
    np.testing.assert_allclose(H.toarray(), H_ref, atol=1e-9)


# ---------------------------------------------------------------------------------------
# no dense n×n at n = 20 000
# ---------------------------------------------------------------------------------------
def test_large_no_dense_objects():
    n = 20_000

    def f(x):
        return jnp.sum((x[1:] - x[:-1]) ** 2) + jnp.sum((x - 1.0) ** 4) + jnp.sum(x)

    def c(x):
        return jnp.concatenate([(jnp.sum(x**2) - n)[None], jnp.sum(x[::2] * x[1::2])[None]])

    x0 = np.full(n, 0.5)
    tracemalloc.start()
    try:
        res = sa_scipy.minimize(f, x0, constraints=so.NonlinearConstraint(c, [0.0, -np.inf],
                                                                          [0.0, 1e4]),
                                options={"maxiter": 4})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    dense_bytes = 8 * n * n  # 3.2 GB
    assert peak < 300e6, f"peak {peak / 1e6:.0f} MB"
    assert peak < dense_bytes / 10
    assert res.nit >= 3
    d = res.derivatives
    H = d.hess(x0)
    assert isinstance(H, sp.csr_array) and H.nnz <= 3 * n
    assert d.counts["hess"] > 0
    con = sa_scipy.nonlinear_constraint(c, x0, 0.0, 0.0)
    J = con.jac(x0)
    assert isinstance(J, sp.csr_array) and J.nnz == 2 * n
    Hc = con.hess(x0, np.array([1.0, 1.0]))
    assert sp.issparse(Hc) and Hc.nnz <= 2 * n


def test_large_least_squares_sparse_jacobian():
    """Rosenbrock residuals at n = 20 000 (Bratu at this size is LSMR-bound: ~30 s)."""
    n = 20_000

    def r(x):
        return jnp.concatenate([10.0 * (x[1:] - x[:-1] ** 2), 1.0 - x[:-1]])

    tracemalloc.start()
    try:
        res = sa_scipy.least_squares(r, np.full(n, 0.8))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.success and res.cost < 1e-20
    np.testing.assert_allclose(res.x, 1.0, atol=1e-9)
    assert isinstance(res.jac, sp.csr_array) and res.jac.nnz == 3 * (n - 1)
    assert res.jacobian.n_colors == 2
    assert peak < 300e6, f"peak {peak / 1e6:.0f} MB"


# ---------------------------------------------------------------------------------------
# the example
# ---------------------------------------------------------------------------------------
def test_example_runs_small():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "trust_constr_scipy.py"), "--small"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "success" in out.stdout.lower()


# ---------------------------------------------------------------------------------------
# input checks shared with the IPOPT adapter (the host layer), issue 13
# ---------------------------------------------------------------------------------------
def test_option_of_wrong_type_is_named():
    """Before: scipy's raw "'>=' not supported between 'int' and 'str'"."""
    with pytest.raises(TypeError, match=r"options\['maxiter'\] must be an integer.*'5'"):
        sa_scipy.minimize(rosen, np.zeros(3), options={"maxiter": "5"})
    with pytest.raises(TypeError, match=r"options\['gtol'\] must be a real number"):
        sa_scipy.minimize(rosen, np.zeros(3), options={"gtol": "1e-8"})
    with pytest.raises(TypeError, match=r"max_nfev= must be an integer"):
        sa_scipy.least_squares(lambda x: x - 1.0, np.zeros(3), max_nfev="5")


def test_constraint_with_lb_above_ub_is_caught():
    """Before: accepted, trust-constr ended with status 4 after many iterations."""
    con = so.NonlinearConstraint(lambda x: jnp.sum(x), 1.0, 0.0)
    with pytest.raises(ValueError, match=r"constraints\[0\]: lower bound > upper bound"):
        sa_scipy.minimize(rosen, np.zeros(3), constraints=con)
    with pytest.raises(ValueError, match="lower bound > upper bound"):
        sa_scipy.nonlinear_constraint(lambda x: x[:2], np.zeros(3), [0.0, 2.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="lower bound > upper bound"):
        sa_scipy.minimize(rosen, np.zeros(3), bounds=so.Bounds([0, 2, 0], [1, 1, 1]))


def test_wrong_length_limits_get_a_clear_message():
    """Before: a numpy broadcast error from inside scipy."""
    with pytest.raises(ValueError, match=r"Bounds.lb has 2 entries, but 3 are needed"):
        sa_scipy.minimize(rosen, np.zeros(3), bounds=so.Bounds(np.zeros(2), np.inf))
    con = so.NonlinearConstraint(lambda x: x[:2], np.zeros(3), np.inf)
    with pytest.raises(ValueError, match=r"constraints\[0\] lb has 3 entries, but 2"):
        sa_scipy.minimize(rosen, np.zeros(3), constraints=con)
    # (scipy.optimize.LinearConstraint checks its own lb/ub lengths at construction)


def test_nan_objective_at_x0_is_reported_as_such():
    """Before: "Maximum number of function evaluations has been exceeded"."""
    with pytest.raises(ValueError, match="objective is nan at x0"):
        sa_scipy.minimize(lambda x: jnp.sum(jnp.log(x)), -np.ones(3))
    with pytest.raises(ValueError, match="gradient is not finite at x0.*first at flat index 1"):
        sa_scipy.minimize(lambda x: jnp.sum(jnp.sqrt(x)), np.array([1.0, 0.0, 2.0]),
                          method="L-BFGS-B")


@pytest.mark.parametrize("bad", [lambda x: jnp.floor(x).astype(int).sum(),
                                 lambda x: jnp.sum(x) > 0])
def test_integer_or_bool_objective_raises_naming_the_dtype(bad):
    """Before: cast to float, zero gradient, "success" at x0."""
    with pytest.raises(TypeError, match=r"returns dtype (int64|bool)"):
        sa_scipy.minimize(bad, np.full(3, 0.5))
    with pytest.raises(TypeError, match=r"returns dtype (int64|bool)"):
        sa_scipy.derivatives(bad, np.full(3, 0.5))
    with pytest.raises(TypeError, match=r"returns dtype int64"):
        sa_scipy.least_squares(lambda x: jnp.floor(x).astype(int), np.full(3, 0.5))
    con = {"type": "ineq", "fun": lambda x: jnp.floor(x).astype(int)}
    with pytest.raises(TypeError, match=r"constraints\[0\] fun returns dtype int64"):
        sa_scipy.minimize(rosen, np.zeros(3), constraints=con)


def test_least_squares_bounds_as_pairs():
    """Before: scipy's "Each lower bound must be strictly less than each upper bound"."""
    c = np.array([-2.0, 0.3, 2.0])
    # (x0 strictly inside: from x0 on a bound scipy's trf stops at x0 and reports success)
    res = sa_scipy.least_squares(lambda x: x - c, np.full(3, 0.5), bounds=[(-1, 1), (None, 1),
                                                                           (0, None)])
    np.testing.assert_allclose(res.x, [-1.0, 0.3, 2.0], atol=1e-8)
    # scipy's own spellings still work, including the ambiguous n = 2 case
    res = sa_scipy.least_squares(lambda x: x - c[:2], np.zeros(2), bounds=([-1, -1], [1, 1]))
    np.testing.assert_allclose(res.x, [-1.0, 0.3], atol=1e-8)
    res = sa_scipy.least_squares(lambda x: x - c, np.zeros(3), bounds=so.Bounds(-1.0, 1.0))
    np.testing.assert_allclose(res.x, [-1.0, 0.3, 1.0], atol=1e-8)
    with pytest.raises(ValueError, match="lower bound == upper bound"):
        sa_scipy.least_squares(lambda x: x - c, np.zeros(3), bounds=[(0, 0), (0, 1), (0, 1)])
    with pytest.raises(ValueError, match="bounds has 2"):
        sa_scipy.least_squares(lambda x: x - c, np.zeros(3), bounds=[(0, 1), (0, 1)])


@pytest.mark.parametrize("n", [1, 2])
def test_least_squares_tiny_problems_use_the_exact_solver(n):
    """Before: a sparse J made scipy use LSMR: IndexError at n = 1, 2e-16 instead of 0."""
    t = np.linspace(0.0, 1.0, 5)
    target = np.array([0.7, -0.2])[:n]

    def residual(x):
        model = x[0] * np.exp(-t) + (x[1] * t if n == 2 else 0.0)
        return model - (target[0] * np.exp(-t) + (target[1] * t if n == 2 else 0.0))

    res = sa_scipy.least_squares(residual, np.zeros(n))
    assert res.success and res.tr_solver == "exact"
    assert isinstance(res.jac, np.ndarray)
    np.testing.assert_allclose(res.x, target, atol=1e-12)
    assert res.cost < 1e-28


def test_least_squares_dense_threshold_is_one_decision():
    r = lambda x: jnp.concatenate([10 * (x[1:] - x[:-1] ** 2), 1 - x[:-1]])  # noqa: E731
    n = sa_scipy.EXACT_MAX_N
    assert sa_scipy.least_squares(r, np.zeros(n), max_nfev=2).tr_solver == "exact"
    big = sa_scipy.least_squares(r, np.zeros(n + 1), max_nfev=2)
    assert big.tr_solver == "lsmr" and sp.issparse(big.jac)
    forced = sa_scipy.least_squares(r, np.zeros(4), tr_solver="lsmr", max_nfev=2)
    assert forced.tr_solver == "lsmr"


def test_float64_off_is_refused():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(RuntimeError, match="float64 is off"):
            sa_scipy.minimize(rosen, np.zeros(3))
        with pytest.raises(RuntimeError, match="float64 is off"):
            sa_scipy.least_squares(lambda x: x, np.zeros(3))
    finally:
        jax.config.update("jax_enable_x64", True)


# ---------------------------------------------------------------------------------------
# setup paid once (issue 14 item 3)
# ---------------------------------------------------------------------------------------
def test_minimize_second_call_reuses_setup_and_compiled_code():
    sa.clear_cache()
    f, traces = helpers.counting(rosen)
    res1 = sa_scipy.minimize(f, np.zeros(6), method="trust-constr")
    n_traces, info = len(traces), sa.cache_info()
    assert n_traces > 0 and info["misses"] >= 1
    res2 = sa_scipy.minimize(f, np.full(6, 0.5), method="trust-constr")
    assert len(traces) == n_traces, "the second call traced (recompiled) fun again"
    assert sa.cache_info()["hits"] == info["hits"] + 1
    np.testing.assert_allclose(res1.x, res2.x, atol=1e-5)
    assert res2.derivatives._setup is res1.derivatives._setup
    # a new shape misses (and traces), the same call again hits
    sa_scipy.minimize(f, np.zeros(7), method="trust-constr")
    assert len(traces) > n_traces
    # (>=: the lazily built sparse Hessian is a core cache entry of its own)
    assert sa.cache_info()["misses"] >= info["misses"] + 1


def test_derivatives_cache_keys_static_args_and_data():
    sa.clear_cache()
    f, traces = helpers.counting(lambda x, a, s: s * jnp.sum(a * x**2))
    a = jnp.arange(3.0)
    d1 = sa_scipy.derivatives(f, np.zeros(3), (a, 2.0))
    d1.hess(np.ones(3))
    d2 = sa_scipy.derivatives(f, np.ones(3), (a, 2.0))
    assert d2._setup is d1._setup
    d2.hess(np.ones(3))
    n = len(traces)
    assert sa_scipy.derivatives(f, np.zeros(3), (a, 3.0))._setup is not d1._setup  # static
    # detection reads the values of args here, so new data is a new setup
    assert sa_scipy.derivatives(f, np.zeros(3), (a + 1, 2.0))._setup is not d1._setup
    assert len(traces) > n
    np.testing.assert_allclose(
        sa_scipy.derivatives(f, np.zeros(3), (a, 3.0)).hess(np.ones(3)).toarray(),
        np.diag(6.0 * np.arange(3.0)))
    sa.set_cache_size(0)
    try:
        assert sa_scipy.derivatives(f, np.zeros(3), (a, 2.0))._setup is not d1._setup
    finally:
        sa.set_cache_size(64)


def test_least_squares_second_call_reuses_setup():
    sa.clear_cache()
    N, lam = 6, 2.0
    r, traces = helpers.counting(bratu_residual)
    res1 = sa_scipy.least_squares(r, np.zeros(N * N), args=(lam, N))
    n = len(traces)
    res2 = sa_scipy.least_squares(r, np.zeros(N * N), args=(lam, N))
    assert len(traces) == n and res2.jacobian is res1.jacobian
    np.testing.assert_allclose(res1.x, res2.x)
    sa_scipy.least_squares(r, np.zeros(N * N), args=(3.0, N))  # a static arg: new setup
    assert len(traces) > n
