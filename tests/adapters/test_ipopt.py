"""Tests for sparseopt_adapters.ipopt: each problem checked against a reference solution."""

import os
import pathlib
import subprocess
import sys
import traceback

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sp

import sparseopt_adapters as sa

cyipopt = pytest.importorskip("cyipopt")
from sparseopt_adapters import ipopt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]


# -- problems -----------------------------------------------------------------------------
hs071 = helpers.hs071_objective
HS071_CONS = helpers.HS071_CONSTRAINTS
HS071_X = helpers.HS071_X  # Hock & Schittkowski
HS071_F = helpers.HS071_F


def chained_rosenbrock(x):
    return jnp.sum(100.0 * (x[:-1] ** 2 - x[1:]) ** 2 + (x[:-1] - 1.0) ** 2)


def trig_exp_constraints(x):
    """Lukšan–Vlček: chained Rosenbrock with trigonometric-exponential constraints (= 0)."""
    a, b, d = x[:-2], x[1:-1], x[2:]
    return (3 * b**3 + 2 * d - 5 + jnp.sin(b - d) * jnp.sin(b + d) + 4 * b
            - a * jnp.exp(a - b) - 3)


def luksan_vlcek_x0(n):
    return np.where(np.arange(n) % 2 == 0, -1.2, 1.0)


# CasADi 3.8.2 nlpsol('ipopt') (IPOPT 3.14.19, tol 1e-8) on the same problem, n = 1000:
# 6 iterations, f* = 6.2324586324379885.
LUKSAN_VLCEK_F = 6.2324586324379885
LUKSAN_VLCEK_NIT = 6


def hs071_derivatives(x, sigma, lam):
    """Closed-form gradient, constraint Jacobian (prod, sum of squares) and Lagrangian Hessian."""
    x1, x2, x3, x4 = x
    grad = np.array([x4 * (2 * x1 + x2 + x3), x1 * x4, x1 * x4 + 1, x1 * (x1 + x2 + x3)])
    jac = np.array([[x2 * x3 * x4, x1 * x3 * x4, x1 * x2 * x4, x1 * x2 * x3], 2 * x])
    hf = np.array([[2 * x4, x4, x4, 2 * x1 + x2 + x3],
                   [x4, 0, 0, x1], [x4, 0, 0, x1], [2 * x1 + x2 + x3, x1, x1, 0]])
    hp = np.array([[0, x3 * x4, x2 * x4, x2 * x3], [x3 * x4, 0, x1 * x4, x1 * x3],
                   [x2 * x4, x1 * x4, 0, x1 * x2], [x2 * x3, x1 * x3, x1 * x2, 0]])
    return grad, jac, sigma * hf + lam[0] * hp + lam[1] * 2 * np.eye(4)


def check_structures(prob):
    """Structures in range and duplicate-free; the Jacobian column-major (CasADi's order:
    MUMPS' fill depends on it), the Hessian's lower triangle row-major."""
    n, m = prob.n, prob.m
    jr, jc = prob.jacobianstructure()
    hr, hc = prob.hessianstructure()
    for r, c, shape, major in ((jr, jc, (m, n), "col"), (hr, hc, (n, n), "row")):
        assert r.dtype == np.int32 and c.dtype == np.int32
        if r.size:
            assert r.min() >= 0 and r.max() < shape[0] and c.min() >= 0 and c.max() < shape[1]
            key = (c.astype(np.int64) * shape[0] + r if major == "col"
                   else r.astype(np.int64) * shape[1] + c)
            assert np.all(np.diff(key) > 0), "not sorted / has duplicates"
    assert np.all(hr >= hc), "Hessian structure must be the lower triangle"


# -- HS071 ------------------------------------------------------------------------------
def test_hs071():
    res = ipopt.minimize(hs071, np.array([1.0, 5.0, 5.0, 1.0]), bounds=[(1, 5)] * 4,
                         constraints=HS071_CONS)
    assert res.success and res.status == 0 and isinstance(res.message, str)
    np.testing.assert_allclose(res.x, HS071_X, rtol=1e-6)
    assert abs(res.fun - HS071_F) < 1e-6
    assert res.nit == 8 and res.nfev >= res.nit and res.njev >= res.nit and res.nhev >= res.nit
    assert len(res.constr) == 2 and res.constr[0].shape == (1,)
    assert res.constr[0][0] >= -1e-7 and abs(res.constr[1][0]) < 1e-7
    assert res.mult_g.shape == (2,) and res.mult_x_L.shape == (4,) and res.mult_x_U.shape == (4,)
    # KKT: grad f + J^T mult_g - z_L + z_U = 0 at the solution
    grad, J, _ = hs071_derivatives(res.x, 1.0, np.zeros(2))
    kkt = grad + J.T @ res.mult_g - res.mult_x_L + res.mult_x_U
    np.testing.assert_allclose(kkt, 0.0, atol=1e-6)
    assert set(res.info) >= {"x", "g", "obj_val", "mult_g", "status", "status_msg"}
    assert res.timing["callbacks_s"] > 0 and res.timing["solve_s"] >= res.timing["callbacks_s"]


def test_hs071_problem_class_values_in_structure_order():
    """Problem callbacks return values matching the structures (vs dense JAX derivatives)."""
    cons = [so.NonlinearConstraint(lambda x: jnp.prod(x), 25.0, np.inf),
            so.NonlinearConstraint(lambda x: jnp.sum(x**2), 40.0, 40.0)]
    prob = ipopt.Problem(hs071, np.array([1.0, 5.0, 5.0, 1.0]), bounds=so.Bounds(1, 5),
                         constraints=cons)
    assert isinstance(prob, cyipopt.Problem) and (prob.n, prob.m) == (4, 2)
    check_structures(prob)
    x = np.array([1.3, 4.1, 3.2, 1.7])
    lam, sigma = np.array([0.7, -1.3]), 0.6
    ref_grad, ref_jac, ref_hess = hs071_derivatives(x, sigma, lam)
    jr, jc = prob.jacobianstructure()
    J = np.zeros((2, 4))
    J[jr, jc] = prob.jacobian(x)
    np.testing.assert_allclose(J, ref_jac, rtol=1e-13)
    hr, hc = prob.hessianstructure()
    H = np.zeros((4, 4))
    H[hr, hc] = prob.hessian(x, lam, sigma)
    np.testing.assert_allclose(H, np.tril(ref_hess), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(prob.gradient(x), ref_grad, rtol=1e-13)
    assert prob.objective(x) == pytest.approx(x[0] * x[3] * x[:3].sum() + x[2], rel=1e-15)
    np.testing.assert_allclose(prob.constraints(x), [x.prod(), (x**2).sum()], rtol=1e-14)
    xs, info = prob.solve()
    assert info["status"] == 0 and isinstance(info["status_msg"], str)
    np.testing.assert_allclose(xs, HS071_X, rtol=1e-6)
    # a second solve from another point reuses the compiled functions (no new compile)
    xs2, info2 = prob.solve(np.array([1.5, 4.0, 4.0, 1.5]))
    assert info2["status"] == 0
    np.testing.assert_allclose(xs2, HS071_X, rtol=1e-6)
    prob.close()


# -- chained Rosenbrock with trig-exp equality constraints, n = 1000 -----------------------
def test_luksan_vlcek_chained_rosenbrock_n1000():
    n = 1000
    con = so.NonlinearConstraint(trig_exp_constraints, 0.0, 0.0)
    prob = ipopt.Problem(chained_rosenbrock, luksan_vlcek_x0(n), constraints=con)
    check_structures(prob)
    nlp = prob.nlp
    assert nlp.jac_rows.size == 3 * (n - 2)  # three nonzeros per constraint row
    assert nlp.hess_rows.size == 2 * n - 1  # tridiagonal lower triangle
    assert nlp.lag.n_colors <= 3 and nlp.jac.n_colors == 3
    # Hessian values vs a Hessian-vector product of the Lagrangian at a random point
    rng = np.random.default_rng(0)
    x, lam, v = rng.standard_normal(n), rng.standard_normal(n - 2), rng.standard_normal(n)
    hr, hc = prob.hessianstructure()
    low = sp.coo_array((prob.hessian(x, lam, 0.8), (hr, hc)), shape=(n, n))
    H = low + sp.triu(low.T, k=1)

    def lag(z):
        return 0.8 * chained_rosenbrock(z) + jnp.dot(lam, trig_exp_constraints(z))

    @jax.jit
    def products(x, v):  # one compile instead of op-by-op dispatch
        hvp = jax.jvp(jax.grad(lag), (x,), (v,))[1]
        return hvp, jax.jvp(trig_exp_constraints, (x,), (v,))[1]

    hvp, jvp = products(x, v)
    np.testing.assert_allclose(H @ v, np.asarray(hvp), rtol=1e-11, atol=1e-9)
    jr, jc = prob.jacobianstructure()
    J = sp.coo_array((prob.jacobian(x), (jr, jc)), shape=(n - 2, n))
    np.testing.assert_allclose(J @ v, np.asarray(jvp), rtol=1e-12, atol=1e-10)
    x_sol, info = prob.solve()
    prob.close()
    assert info["status"] == 0
    assert info["obj_val"] == pytest.approx(LUKSAN_VLCEK_F, rel=1e-10)
    assert nlp.iteration == LUKSAN_VLCEK_NIT  # the same iteration count as CasADi
    assert np.max(np.abs(info["g"])) < 1e-8
    # fused evaluations: one compiled (f, c) call per point and one (grad, J) call per point
    assert nlp.evals["fc"] <= max(nlp.calls["objective"], nlp.calls["constraints"])
    assert nlp.evals["gj"] <= max(nlp.calls["gradient"], nlp.calls["jacobian"])
    assert nlp.evals["gj"] < nlp.calls["gradient"] + nlp.calls["jacobian"]


# -- bounds ----------------------------------------------------------------------------
def test_bound_constrained():
    """A QP (solution = clip) and Rosenbrock with bounds (reference: L-BFGS-B)."""
    a = np.array([-2.0, 0.3, 4.0, -0.5, 7.0])
    lo = np.array([-1.0, -1.0, -np.inf, 0.0, 1.0])
    hi = np.array([1.0, 1.0, 2.0, np.inf, 5.0])
    res = ipopt.minimize(lambda x, a: 0.5 * jnp.sum((x - a) ** 2), np.zeros(5), args=(a,),
                         bounds=so.Bounds(lo, hi))
    assert res.success
    np.testing.assert_allclose(res.x, np.clip(a, lo, hi), atol=1e-7)
    # bound multipliers: z_L - z_U = grad f = x - a
    np.testing.assert_allclose(res.mult_x_L - res.mult_x_U, res.x - a, atol=1e-6)

    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    pairs = [(None, 0.7)] + [(-2.0, 2.0)] * 6 + [(1.2, None)]
    x0 = np.full(8, 0.5)
    x0[-1] = 1.5
    res = ipopt.minimize(rosen, x0, bounds=pairs)
    ref = so.minimize(so.rosen, x0, jac=so.rosen_der, bounds=pairs, method="L-BFGS-B",
                      options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000})
    assert res.success
    np.testing.assert_allclose(res.x, ref.x, atol=1e-5)
    assert res.fun == pytest.approx(ref.fun, rel=1e-6)
    assert res.fun <= ref.fun + 1e-12  # IPOPT at least as good as the reference


# -- inequalities -------------------------------------------------------------------------
def test_inequality_constrained():
    """min (x0-2)^2 + (x1-1)^2 s.t. x0^2 <= x1, x0 + x1 <= 2: solution (1, 1), f = 1."""
    f = lambda x: (x[0] - 2.0) ** 2 + (x[1] - 1.0) ** 2
    cons = [
        so.NonlinearConstraint(lambda x: x[0] ** 2 - x[1], -np.inf, 0.0),
        {"type": "ineq", "fun": lambda x, s: s - x[0] - x[1], "args": (2.0,)},
    ]
    res = ipopt.minimize(f, np.array([0.0, 0.0]), constraints=cons)
    assert res.success
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-7)
    assert res.fun == pytest.approx(1.0, abs=1e-7)
    # both active; multipliers from grad f + J^T lam = 0: lam = (2/3, 2/3) in IPOPT's sign
    np.testing.assert_allclose(res.mult_g, [2 / 3, -2 / 3], atol=1e-6)
    ref = so.minimize(f, np.array([0.0, 0.0]), method="SLSQP", constraints=[
        {"type": "ineq", "fun": lambda x: x[1] - x[0] ** 2},
        {"type": "ineq", "fun": lambda x: 2.0 - x[0] - x[1]}], tol=1e-12)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)


def test_linear_constraint_sparse_and_dense():
    """min ||x - 1||^2 s.t. sum(x) = 2 (sparse A) and x0 - x1 >= 0.5 (dense A)."""
    n = 6
    A = sp.csr_array(np.ones((1, n)))
    cons = [so.LinearConstraint(A, 2.0, 2.0),
            so.LinearConstraint(np.eye(1, n) - np.eye(1, n, k=1), 0.5, np.inf)]
    res = ipopt.minimize(lambda x: jnp.sum((x - 1.0) ** 2), np.zeros(n), constraints=cons)
    ref = np.full(n, 1 / 3) + np.r_[0.25, -0.25, np.zeros(n - 2)]  # from the KKT conditions
    assert res.success
    np.testing.assert_allclose(res.x, ref, atol=1e-7)
    assert res.x.sum() == pytest.approx(2.0, abs=1e-9)


# -- the seed energy with PatternMatrix parameters -------------------------------------------
def test_seed_energy_pattern_matrix_pytree():
    """E(g) = ||X - Y G^T L G B||^2 over the nonzeros of G; reference minimum E = 0."""
    rng = np.random.default_rng(3)
    p, q, n_y, n_b = 12, 6, 8, 7
    base = np.minimum(np.arange(p) * q // p, q - 2)
    r, c = np.repeat(np.arange(p), 2), np.stack([base, base + 1], axis=1).ravel()
    L = sp.diags_array([1.0, -0.5, -0.3, 0.7], offsets=[-2, -1, 1, 3], shape=(p, p)) \
        + 2 * sp.eye_array(p)
    L = L.toarray()
    Y, B = rng.standard_normal((n_y, q)), rng.standard_normal((q, n_b))
    g_star = rng.standard_normal(r.size)
    G_star = np.zeros((p, q))
    G_star[r, c] = g_star
    X = Y @ G_star.T @ L @ G_star @ B

    def energy(params, X):
        G, Lm = params["G"], params["L"]
        M = G.T @ (Lm @ G.todense())
        return jnp.sum((X - Y @ M @ B) ** 2)

    G0 = sa.PatternMatrix(g_star + 0.05 * rng.standard_normal(r.size), r, c, (p, q))
    x0 = {"G": G0, "L": sa.Fixed(L)}
    seen = []
    with pytest.warns(sa.DenseColoringWarning):  # dense Y, B: a dense 24 x 24 Hessian
        res = ipopt.minimize(energy, x0, args=(X,), callback=lambda s: seen.append(s.x))
    assert res.success, res.message
    assert isinstance(res.x["G"], sa.PatternMatrix)
    assert isinstance(res.x["L"], sa.Fixed)
    assert res.fun < 1e-14 and res.x_flat.shape == (r.size,)
    # reference: E = 0 and a vanishing gradient at the solution
    grad = jax.jit(jax.grad(lambda g: energy({"G": sa.PatternMatrix(g, r, c, (p, q)), "L": L}, X)))
    assert np.max(np.abs(np.asarray(grad(res.x["G"].values)))) < 1e-6
    G = np.asarray(res.x["G"].todense())
    np.testing.assert_allclose(Y @ G.T @ L @ G @ B, X, atol=1e-7)
    assert seen and isinstance(seen[-1]["G"], sa.PatternMatrix)


# -- IPOPT's derivative checker ---------------------------------------------------------------
def test_ipopt_derivative_checker_finds_no_errors(tmp_path):
    """IPOPT's own finite-difference checker (first and second order) at a generic point.

    The problem has no entry that is zero by cancellation (those read as finite-difference
    noise, e.g. d²/dadb of sin(a-b)sin(a+b)), so every reported error would be ours.
    """
    out = tmp_path / "ipopt.out"
    n = 20
    t = np.linspace(0.0, 1.0, n)

    def f(x):
        return 0.25 * jnp.sum((x - t) ** 4) + jnp.sum(x[:-1] * x[1:] ** 2) + jnp.sum(x)

    def bratu(x):  # one row per interior point; exp makes the Hessian diagonal nonzero
        return x[:-2] - 2.0 * x[1:-1] + x[2:] + 0.1 * jnp.exp(x[1:-1])

    cons = [so.NonlinearConstraint(bratu, 0.0, 0.0),
            {"type": "ineq", "fun": lambda x: 10.0 - jnp.sum(x**2) - x[0] * x[-1]}]
    x0 = 0.3 + 0.2 * np.random.default_rng(1).standard_normal(n)
    prob = ipopt.Problem(f, x0, constraints=cons, bounds=[(-5.0, 5.0)] * n, options={
        "derivative_test": "second-order", "point_perturbation_radius": 0.0,
        "max_iter": 1, "output_file": str(out), "file_print_level": 5})
    _, info = prob.solve()
    assert info["status"] == -1  # max_iter=1
    text = out.read_text()
    assert "Starting derivative checker for first derivatives" in text
    assert "Starting derivative checker for second derivatives" in text
    errors = [line for line in text.splitlines() if line.startswith("*")]
    assert "No errors detected by derivative checker." in text, "\n".join(errors)
    # and it does catch a 1e-3 relative error in one off-diagonal Hessian entry
    h = prob.nlp._h

    def wrong(*a):  # the flat output: the values, then the finite flag
        return h(*a).at[3].multiply(1.001)

    prob.nlp._h = wrong
    prob.solve()
    assert "Derivative checker detected 2 error(s)" in out.read_text()  # (i, j) and (j, i)
    prob.close()


# -- failures ------------------------------------------------------------------------------
class HessianBoom(RuntimeError):
    pass


def raising_hessian(*_):
    raise HessianBoom("hessian exploded")


@pytest.mark.parametrize("entry", ["Problem", "minimize"])
def test_raising_hessian_surfaces_original_exception(entry, monkeypatch):
    prob = ipopt.Problem(hs071, np.array([1.0, 5.0, 5.0, 1.0]), bounds=[(1, 5)] * 4,
                         constraints=HS071_CONS)
    prob.nlp._h = raising_hessian  # the compiled Hessian raises at runtime
    if entry == "Problem":
        with pytest.raises(HessianBoom, match="hessian exploded") as ei:
            prob.solve()
    else:
        from sparseopt_adapters.ipopt import _impl

        monkeypatch.setattr(_impl, "Problem", lambda *a, **k: prob)
        with pytest.raises(HessianBoom, match="hessian exploded") as ei:
            ipopt.minimize(hs071, np.zeros(4))
    frames = [f.name for f in traceback.extract_tb(ei.value.__traceback__)]
    assert "raising_hessian" in frames  # the original traceback is kept
    assert prob.nlp.calls["hessian"] == 1  # IPOPT stopped at once


def test_raising_objective_and_callback_surface():
    def fun(x):
        def host(v):
            if v > 5.0:
                raise KeyError("objective blew up on the host")
            return v

        val = jnp.sum((x - 10.0) ** 2)
        probe = jax.lax.stop_gradient(x[0])
        return jax.pure_callback(host, jax.ShapeDtypeStruct((), jnp.float64), probe) * 0 + val

    # JAX re-raises a host exception as JaxRuntimeError: that is what surfaces, unchanged
    with pytest.warns(sa.SparsityWarning), \
            pytest.raises(jax.errors.JaxRuntimeError, match="objective blew up"):
        ipopt.minimize(fun, np.zeros(2))

    def cb(state):
        if state.nit == 2:
            raise ValueError("callback failed")

    with pytest.raises(ValueError, match="callback failed"):
        ipopt.minimize(hs071, np.array([1.0, 5.0, 5.0, 1.0]), bounds=[(1, 5)] * 4,
                       constraints=HS071_CONS, callback=cb)


def test_nonfinite_values_are_reported():
    # Newton from x0 = 3 jumps to x = -3 where log is NaN: IPOPT cuts the step back
    res = ipopt.minimize(lambda x: jnp.sum(x - jnp.log(x)), np.array([3.0]))
    assert res.success
    np.testing.assert_allclose(res.x, [1.0], atol=1e-8)
    assert res.nonfinite["objective"] >= 1
    assert "objective returned NaN/inf" in res.message and "cuts the step" in res.message
    # a NaN gradient at the start stops IPOPT with a clear message
    res = ipopt.minimize(lambda x: jnp.sum(jnp.sqrt(x**2)), np.zeros(3))
    assert not res.success and res.status == -13
    assert res.nonfinite["gradient"] >= 1
    assert "objective gradient returned NaN/inf" in res.message


# -- options, limited memory, callbacks --------------------------------------------------------
def test_limited_memory_builds_no_hessian():
    opts = {"hessian_approximation": "limited-memory", "maxiter": 200}
    prob = ipopt.Problem(hs071, np.array([1.0, 5.0, 5.0, 1.0]), bounds=[(1, 5)] * 4,
                         constraints=HS071_CONS, options=opts)
    assert prob.nlp.lag is None and prob.hessianstructure()[0].size == 0
    x, info = prob.solve()
    prob.close()
    assert info["status"] == 0 and prob.nlp.calls["hessian"] == 0
    np.testing.assert_allclose(x, HS071_X, rtol=1e-5)
    assert prob.nlp.iteration > 8  # quasi-Newton: more iterations than with the Hessian


def test_callback_early_stop():
    seen = []

    def cb(state):
        seen.append((state.nit, state.fun, state.inf_pr, state.inf_du, state.x.copy()))
        return state.nit >= 3

    res = ipopt.minimize(hs071, np.array([1.0, 5.0, 5.0, 1.0]), bounds=[(1, 5)] * 4,
                         constraints=HS071_CONS, callback=cb)
    assert res.status == 5 and not res.success and res.nit == 3
    assert "callback asked to stop at iteration 3" in res.message
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    np.testing.assert_allclose(seen[-1][4], res.x)
    x_start = seen[0][4]  # x0 pushed into the interior of the bounds by IPOPT
    assert seen[0][1] == pytest.approx(x_start[0] * x_start[3] * x_start[:3].sum() + x_start[2])

    def stop(state):
        raise StopIteration

    res = ipopt.minimize(hs071, np.array([1.0, 5.0, 5.0, 1.0]), bounds=[(1, 5)] * 4,
                         constraints=HS071_CONS, callback=stop)
    assert res.status == 5 and res.nit == 0


def test_options_errors_and_coercion():
    f = lambda x: jnp.sum((x - 1.0) ** 2)
    with pytest.raises(ValueError, match=r"not_an_option.*not a valid option"):
        ipopt.minimize(f, np.zeros(2), options={"not_an_option": 1})
    with pytest.raises(ValueError, match="mu_strategy"):
        ipopt.minimize(f, np.zeros(2), options={"mu_strategy": "bogus"})
    # an int for a real option, numpy scalars, and the scipy alias maxiter all work
    res = ipopt.minimize(f, np.zeros(2), options={"tol": 1, "maxiter": np.int64(50),
                                                  "acceptable_tol": np.float32(1e-3)})
    assert res.success


def test_bad_input_errors():
    f = lambda x: jnp.sum(x**2)
    with pytest.raises(ValueError, match="bounds has 3"):
        ipopt.minimize(f, np.zeros(2), bounds=[(0, 1)] * 3)
    with pytest.raises(ValueError, match="lower bound > upper bound"):
        ipopt.minimize(f, np.zeros(2), bounds=so.Bounds([0, 2], [1, 1]))
    with pytest.raises(ValueError, match="'eq' or 'ineq'"):
        ipopt.minimize(f, np.zeros(2), constraints={"type": "equal", "fun": f})
    with pytest.raises(TypeError, match="NonlinearConstraint"):
        ipopt.minimize(f, np.zeros(2), constraints=[lambda x: x])
    with pytest.raises(ValueError, match="must return a scalar"):
        ipopt.minimize(lambda x: x**2, np.zeros(2))


def test_lazy_import_and_example_runs_small():
    """`import sparseopt_adapters` leaves cyipopt alone; the example runs with --small."""
    code = ("import sys, runpy, sparseopt_adapters; assert 'cyipopt' not in sys.modules; "
            "sys.argv = ['optimal_control_ipopt.py', '--small']; "
            "runpy.run_path('examples/optimal_control_ipopt.py', run_name='__main__'); "
            "assert 'cyipopt' in sys.modules")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=300)
    assert "success: True" in out.stdout, out.stdout + out.stderr


# -- issue 13: honest results on non-float objectives ------------------------------------------
@pytest.mark.parametrize("bad", [lambda x: jnp.floor(x).astype(int).sum(),
                                 lambda x: jnp.sum(x) > 0])
def test_integer_or_bool_objective_raises_naming_the_dtype(bad):
    """Before: cast to float, zero gradient, reported solved at x0."""
    with pytest.raises(TypeError, match=r"fun returns dtype (int64|bool)"):
        ipopt.minimize(bad, np.full(3, 0.5))
    con = {"type": "eq", "fun": lambda x: jnp.floor(x).astype(int)}
    with pytest.raises(TypeError, match=r"constraints\[0\] fun returns dtype int64"):
        ipopt.minimize(chained_rosenbrock, np.zeros(3), constraints=con)


# -- mu_strategy: IPOPT's default, not minimize_ipopt's ------------------------------------------
def test_mu_strategy_default_is_ipopts_monotone():
    assert ipopt.DEFAULT_OPTIONS["mu_strategy"] == "monotone"
    assert "minimize_ipopt" in ipopt.minimize.__doc__ and "adaptive" in ipopt.minimize.__doc__
    p = helpers.get("simplex_projection_eq_ineq")  # eq + ineq: the strategies differ
    run = lambda **o: ipopt.minimize(p.fun, p.x0, constraints=p.constraints, **o)  # noqa: E731
    default = run()
    mono = run(options={"mu_strategy": "monotone"})
    adaptive = run(options={"mu_strategy": "adaptive"})
    assert default.success and mono.success and adaptive.success
    assert default.nit == mono.nit == 9
    np.testing.assert_array_equal(default.x, mono.x)
    assert adaptive.nit == 8  # the option reaches IPOPT and changes the iterates
    np.testing.assert_allclose(adaptive.x, mono.x, atol=1e-6)


# -- issue 14: setup paid once, compilations counted -------------------------------------------
def test_second_minimize_reuses_detection_coloring_and_executables():
    sa.clear_cache()
    f, traces = helpers.counting(hs071)
    kw = dict(bounds=[(1, 5)] * 4, constraints=HS071_CONS)
    res1 = ipopt.minimize(f, np.array([1.0, 5.0, 5.0, 1.0]), **kw)
    n_traces, info = len(traces), sa.cache_info()
    assert res1.compilations["evaluators"] == 3  # fc, gj, h: one executable per quantity
    assert res1.setup_time["compile"] > 0
    res2 = ipopt.minimize(f, np.array([1.5, 4.5, 4.5, 1.5]), **kw)
    assert len(traces) == n_traces, "the second call traced fun again"
    assert sa.cache_info()["hits"] == info["hits"] + 1
    assert res2.compilations["count"] == 0 and res2.setup_time["compile"] == 0.0
    np.testing.assert_allclose(res2.x, HS071_X, rtol=1e-6)
    # bounds and constraint limits are per call, not part of the setup
    res3 = ipopt.minimize(f, np.array([1.0, 5.0, 5.0, 1.0]), bounds=[(1, 4)] * 4,
                          constraints=HS071_CONS)
    assert len(traces) == n_traces and np.all(res3.x <= 4 + 1e-6)  # IPOPT relaxes by 1e-8·|b|
    # a new constraint function object is a new setup
    cons = [HS071_CONS[0], {"type": "eq", "fun": lambda x: jnp.sum(x**2) - 40.0}]
    ipopt.minimize(f, np.array([1.0, 5.0, 5.0, 1.0]), bounds=kw["bounds"], constraints=cons)
    assert len(traces) > n_traces


def test_first_minimize_traces_each_user_function_once():
    """Detection, colouring checks and the three executables all transform one jaxpr of
    ``fun`` and one of each constraint (7 and 12 traces of them before)."""
    sa.clear_cache()
    f, ftraces = helpers.counting(hs071)
    g, gtraces = helpers.counting(lambda x: jnp.prod(x) - 25.0)
    h, htraces = helpers.counting(lambda x: jnp.sum(x**2) - 40.0)
    cons = [{"type": "ineq", "fun": g}, {"type": "eq", "fun": h}]
    res = ipopt.minimize(f, np.array([1.0, 5.0, 5.0, 1.0]), bounds=[(1, 5)] * 4,
                         constraints=cons)
    np.testing.assert_allclose(res.x, HS071_X, rtol=1e-6)
    assert (len(ftraces), len(gtraces), len(htraces)) == (1, 1, 1)
    assert res.compilations["evaluators"] == 3


def test_setup_cache_misses_on_new_shape_static_arg_and_hessian_option():
    sa.clear_cache()
    f, traces = helpers.counting(lambda x, c, s: s * jnp.sum((x - c) ** 2) + jnp.sum(x**4))
    c = jnp.ones(3)
    ipopt.minimize(f, np.zeros(3), (c, 2.0))
    n = len(traces)
    ipopt.minimize(f, np.zeros(3), (c + 1.0, 2.0))  # new traced values: same setup
    assert len(traces) == n
    ipopt.minimize(f, np.zeros(3), (c, 3.0))  # new static (Python float) value
    assert len(traces) > n
    n = len(traces)
    ipopt.minimize(f, np.zeros(4), (jnp.ones(4), 2.0))  # new shape
    assert len(traces) > n
    n = len(traces)
    res = ipopt.minimize(f, np.zeros(3), (c, 2.0),
                         options={"hessian_approximation": "limited-memory"})
    assert len(traces) > n and res.compilations["evaluators"] == 2
    sa.set_cache_size(0)
    try:
        n = len(traces)
        ipopt.minimize(f, np.zeros(3), (c, 2.0))
        assert len(traces) > n
    finally:
        sa.set_cache_size(64)


def test_fixed_values_and_patterns_in_x0_are_part_of_the_setup_key():
    """sa.Fixed values and PatternMatrix patterns are baked into the compiled code."""
    sa.clear_cache()

    def f(t):
        return jnp.sum((t["x"] - t["c"]) ** 2)

    r1 = ipopt.minimize(f, {"x": np.zeros(2), "c": sa.Fixed(np.array([1.0, 2.0]))})
    r2 = ipopt.minimize(f, {"x": np.zeros(2), "c": sa.Fixed(np.array([3.0, 4.0]))})
    np.testing.assert_allclose(r1.x["x"], [1.0, 2.0], atol=1e-7)
    np.testing.assert_allclose(r2.x["x"], [3.0, 4.0], atol=1e-7)
    # a PatternMatrix with another pattern (same nnz) is another problem
    T = jnp.asarray(np.arange(9.0).reshape(3, 3))

    def g(G):
        return jnp.sum((G.todense() - T) ** 2)

    A = sa.PatternMatrix(np.zeros(3), [0, 1, 2], [0, 1, 2], (3, 3))
    B = sa.PatternMatrix(np.zeros(3), [0, 1, 2], [2, 1, 0], (3, 3))
    np.testing.assert_allclose(ipopt.minimize(g, A).x.values, [0.0, 4.0, 8.0], atol=1e-7)
    np.testing.assert_allclose(ipopt.minimize(g, B).x.values, [2.0, 4.0, 6.0], atol=1e-7)


def test_index_arrays_are_arguments_not_baked_constants():
    """The gradient+Jacobian executable takes the decompression indices as arguments."""
    n = 2000
    con = so.NonlinearConstraint(lambda x: x[1:] ** 2 - x[:-1], 0.0, 0.0)
    prob = ipopt.Problem(chained_rosenbrock, np.ones(n), constraints=con)
    s = prob.nlp.setup
    assert s.jac_index and all(hasattr(a, "shape") for a in jax.tree.leaves(s.jac_index))
    text = s._gj.as_text()
    big = [line for line in text.splitlines() if "constant" in line and len(line) > 2000]
    assert not big, f"{len(big)} large constants baked into the executable"
    prob.close()


def test_lagrangian_hessian_is_coloured_once(monkeypatch):
    """The star-vs-acyclic choice hands its coloring to the Lagrangian Hessian: the
    compressed-derivative layer never colours the same pattern again (it did, doubling the
    colouring part of the setup)."""
    import sparseopt_adapters._compressed as compressed

    calls = []
    real = compressed.color_hessian

    def counting(*a, **k):
        calls.append(a[0].shape)
        return real(*a, **k)

    monkeypatch.setattr(compressed, "color_hessian", counting)
    sa.clear_cache()
    fun = lambda x: jnp.sum((x[1:] - x[:-1] ** 2) ** 2) + jnp.sum(x**4)  # noqa: E731
    cons = [{"type": "eq", "fun": lambda x: x[::2] ** 2 - x[1::2]}]
    res = ipopt.minimize(fun, jnp.full(8, 0.5), constraints=cons)
    assert res.success, res.message
    assert calls == [], calls
