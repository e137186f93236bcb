"""Every adapter over one registry of problems (tests/helpers.py), against its references.

Adapters: ``ipopt.minimize``, ``sa_scipy.minimize`` (trust-constr), ``sa_scipy.least_squares``
(problems with a residual and no general constraints), and the optimistix solvers through
``optx.least_squares`` (GaussNewton, LevenbergMarquardt) and ``optx.minimise`` (Newton) on the
unconstrained problems. Each result must be a success, reach the reference minimum, satisfy
bounds and constraints, and (where the minimiser is unique) match the reference point.
"""

import warnings

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import sparseopt_adapters as sa


def _ipopt(p):
    ipopt = pytest.importorskip("sparseopt_adapters.ipopt")
    res = ipopt.minimize(p.fun, p.x0, p.args, bounds=p.bounds, constraints=p.constraints)
    assert res.success, res.message
    return res.x, res.fun


def _scipy_minimize(p):
    from sparseopt_adapters import scipy as sa_scipy

    opts = {"xtol": 1e-14, "gtol": 1e-12, "maxiter": 3000}
    if p.constrained or p.bounded:
        opts["barrier_tol"] = 1e-12  # scipy's 1e-8 left the simplex problem 2e-5 off
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # trust-constr's "delta_grad == 0.0"
        res = sa_scipy.minimize(p.fun, p.x0, p.args, bounds=p.bounds,
                                constraints=p.constraints, options=opts)
    assert res.success, res.message
    return res.x, res.fun


def _scipy_least_squares(p):
    from sparseopt_adapters import scipy as sa_scipy

    kw = {"bounds": p.bounds} if p.bounds is not None else {}
    res = sa_scipy.least_squares(p.residual, p.x0, p.args, xtol=1e-14, ftol=1e-14, gtol=1e-14,
                                 **kw)
    assert res.success, res.message
    return res.x, 2.0 * res.cost


def _optx(solver_name):
    def run(p):
        optx = pytest.importorskip("optimistix")
        from sparseopt_adapters import optimistix as sa_optx

        args = p.args
        solver = getattr(sa_optx, solver_name)(rtol=1e-10, atol=1e-10)
        y0 = jax.tree.map(jnp.asarray, p.x0)
        if solver_name == "Newton":
            sol = optx.minimise(lambda y, a: p.fun(y, *a), solver, y0, args, max_steps=500)
        else:
            sol = optx.least_squares(lambda y, a: p.residual(y, *a), solver, y0, args,
                                     max_steps=500)
        assert sol.result == optx.RESULTS.successful
        return sol.value, float(p.fun(sol.value, *args))

    return run


ADAPTERS = {
    "ipopt.minimize": (_ipopt, lambda p: True),
    "scipy.minimize": (_scipy_minimize, lambda p: True),
    "scipy.least_squares": (_scipy_least_squares,
                            lambda p: p.residual is not None and not p.constrained),
    "optx.GaussNewton": (_optx("GaussNewton"),
                         lambda p: p.residual is not None and p.unconstrained),
    "optx.LevenbergMarquardt": (_optx("LevenbergMarquardt"),
                                lambda p: p.residual is not None and p.unconstrained),
    "optx.Newton": (_optx("Newton"), lambda p: p.unconstrained),
}


@pytest.mark.parametrize("name", sorted(helpers.PROBLEMS))
@pytest.mark.parametrize("adapter", list(ADAPTERS))
def test_conformance(adapter, name):
    p = helpers.get(name)
    run, applies = ADAPTERS[adapter]
    if not applies(p):
        pytest.skip(f"{adapter} does not take {name}'s constraints/bounds")
    x, f = run(p)
    assert abs(f - p.f_star) <= p.f_tol * max(1.0, abs(p.f_star)), (f, p.f_star)
    z = p.flat(x)
    if p.bounds is not None:
        lo, hi = np.array(p.bounds, dtype=float).T
        slack = 1e-7 * np.maximum(1.0, np.abs(np.array(p.bounds, dtype=float).T))  # IPOPT
        assert np.all(z >= lo - slack[0]) and np.all(z <= hi + slack[1])  # relaxes by 1e-8
    for con in p.constraints:
        if isinstance(con, dict):
            v = np.asarray(con["fun"](jnp.asarray(z)))
            assert np.all(np.abs(v) <= 1e-7) if con["type"] == "eq" else np.all(v >= -1e-7)
        else:
            v = np.asarray(con.fun(jnp.asarray(z)))
            assert np.all(v >= con.lb - 1e-7) and np.all(v <= con.ub + 1e-7)
    if p.x_star is not None:
        np.testing.assert_allclose(z, p.x_star, atol=p.x_tol)


def test_registry_references_are_independent():
    """The references are minima of the registered objectives (checked without adapters)."""
    for name in helpers.PROBLEMS:
        p = helpers.get(name)
        if p.x_star is None:
            continue
        x = jnp.asarray(p.x_star)
        assert abs(float(p.fun(x, *p.args)) - p.f_star) <= 1e-6 * max(1.0, abs(p.f_star))
        if p.residual is not None:
            r = np.asarray(p.residual(x, *p.args))
            np.testing.assert_allclose(np.sum(r**2), float(p.fun(x, *p.args)), rtol=1e-10,
                                       atol=1e-20)
        if p.unconstrained:
            g = np.asarray(jax.grad(p.fun)(x, *p.args))
            assert np.max(np.abs(g)) < 1e-5, (name, np.max(np.abs(g)))


def test_registry_has_the_required_families():
    names = set(helpers.PROBLEMS)
    assert {"hs071", "rosenbrock_10", "bratu_2d", "box_quadratic",
            "simplex_projection_eq_ineq", "seed_fit"} <= names
    p = helpers.get("simplex_projection_eq_ineq")
    kinds = {c["type"] if isinstance(c, dict) else type(c).__name__ for c in p.constraints}
    assert kinds == {"eq", "NonlinearConstraint"}
    assert isinstance(helpers.get("seed_fit").x0, sa.PatternMatrix)
    assert isinstance(helpers.get("hs071").constraints[0], dict)
    assert so is not None
