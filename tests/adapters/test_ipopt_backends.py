"""backend="libipopt" (IPOPT's C interface via ctypes) against backend="cyipopt".

On the same libipopt (the one inside cyipopt-wheels, always installed) both backends must take
the same iterates (to 1e-10) and make the same callback calls, over problems with bounds,
equality and inequality constraints, NaN trial points, a raising Hessian and a stopping
callback. The library resolution and its error messages are tested here too; a second IPOPT
build (casadi's) is exercised in a subprocess.
"""

import os
import pathlib
import subprocess
import sys
import textwrap
import traceback

import helpers
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

cyipopt = pytest.importorskip("cyipopt")
from sparseopt_adapters import ipopt  # noqa: E402
from sparseopt_adapters.ipopt import _capi, _libraries  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
WHEEL_LIB = _capi.cyipopt_library_path()
pytestmark = pytest.mark.skipif(WHEEL_LIB is None, reason="cyipopt-wheels' libipopt not found")


# -- problems -----------------------------------------------------------------------------
def hs071(x):
    return x[0] * x[3] * jnp.sum(x[:3]) + x[2]


HS071 = dict(fun=hs071, x0=np.array([1.0, 5.0, 5.0, 1.0]), bounds=[(1, 5)] * 4,
             constraints=[{"type": "ineq", "fun": lambda x: jnp.prod(x) - 25.0},
                          {"type": "eq", "fun": lambda x: jnp.sum(x**2) - 40.0}])


def chained_rosenbrock(x):
    return jnp.sum(100.0 * (x[:-1] ** 2 - x[1:]) ** 2 + (x[:-1] - 1.0) ** 2)


def luksan_vlcek_constraints(x):
    a, b, d = x[:-2], x[1:-1], x[2:]
    return (3 * b**3 + 2 * d - 5 + jnp.sin(b - d) * jnp.sin(b + d) + 4 * b
            - a * jnp.exp(a - b) - 3)


PROBLEMS = {
    "hs071": HS071,
    "bounds": dict(fun=chained_rosenbrock, x0=np.full(7, 0.5),
                   bounds=so.Bounds(-0.5, np.array([0.8, 0.9, 2, 2, 2, 0.7, 2]))),
    "equality": dict(fun=chained_rosenbrock,
                     x0=np.where(np.arange(40) % 2 == 0, -1.2, 1.0),
                     constraints=so.NonlinearConstraint(luksan_vlcek_constraints, 0.0, 0.0)),
    "inequality": dict(fun=lambda x: jnp.sum((x - jnp.arange(5.0)) ** 2), x0=np.zeros(5),
                       constraints=[{"type": "ineq", "fun": lambda x: 3.0 - jnp.sum(x**2)},
                                    so.LinearConstraint(np.ones((1, 5)), -np.inf, 4.0)]),
    # x - log x: Newton's first step from 3 lands at -3 where log is NaN (IPOPT cuts back)
    "nan-trial": dict(fun=lambda x: jnp.sum(x - jnp.log(x)), x0=np.array([3.0, 2.5])),
    "limited-memory": dict(HS071, options={"hessian_approximation": "limited-memory"}),
}


def trace(backend, problem, lib=WHEEL_LIB, stop_at=None):
    """Solve recording every iterate (x, multipliers, infeasibilities) seen by the callback."""
    seen = []

    def cb(state):
        seen.append(np.concatenate([state.x_flat, state.mult_g, state.mult_x_L, state.mult_x_U,
                                    [state.fun, state.inf_pr, state.inf_du, state.mu]]))
        return stop_at is not None and state.nit >= stop_at

    kw = dict(problem)
    res = ipopt.minimize(kw.pop("fun"), kw.pop("x0"), **kw, callback=cb, backend=backend,
                         libipopt=lib if backend == "libipopt" else None)
    return res, np.array(seen)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_same_iterates_on_the_same_library(name):
    ref, ref_seen = trace("cyipopt", PROBLEMS[name])
    res, seen = trace("libipopt", PROBLEMS[name])
    assert res.ipopt_library["path"] == ref.ipopt_library["path"] == str(
        pathlib.Path(WHEEL_LIB).resolve())
    assert res.success and ref.success, (res.message, ref.message)
    assert (res.status, res.nit) == (ref.status, ref.nit)
    assert (res.nfev, res.njev, res.nhev) == (ref.nfev, ref.njev, ref.nhev)
    assert seen.shape == ref_seen.shape and len(seen) == res.nit + 1
    np.testing.assert_allclose(seen, ref_seen, rtol=1e-10, atol=1e-10)
    for key in ("x_flat", "g", "mult_g", "mult_x_L", "mult_x_U"):
        np.testing.assert_allclose(res[key], ref[key], rtol=1e-10, atol=1e-10)
    assert res.fun == pytest.approx(ref.fun, rel=1e-12)
    assert res.message == ref.message and res.nonfinite == ref.nonfinite
    assert set(res) == set(ref) and set(res.info) == set(ref.info)  # the same result keys
    assert res.ipopt_library["backend"] == "libipopt" and ref.ipopt_library["backend"] == "cyipopt"
    if name == "nan-trial":
        assert res.nonfinite["objective"] >= 1


@pytest.mark.filterwarnings("ignore::sparseopt_adapters.DenseColoringWarning")  # seed_fit
@pytest.mark.parametrize("name", sorted(helpers.PROBLEMS))
def test_registry_problems_take_the_same_iterates(name):
    """The shared registry (tests/helpers.py): pytrees, PatternMatrix, args, bounds, both."""
    p = helpers.get(name)
    problem = dict(fun=p.fun, x0=p.x0, args=p.args, bounds=p.bounds, constraints=p.constraints)
    ref, ref_seen = trace("cyipopt", problem)
    res, seen = trace("libipopt", problem)
    assert res.success and (res.status, res.nit) == (ref.status, ref.nit)
    assert (res.nfev, res.njev, res.nhev) == (ref.nfev, ref.njev, ref.nhev)
    np.testing.assert_allclose(seen, ref_seen, rtol=1e-10, atol=1e-10)
    assert res.fun == pytest.approx(p.f_star, rel=p.f_tol, abs=p.f_tol)


def test_values_are_written_into_the_c_buffer_in_place():
    buf = np.zeros(5)
    view = _capi._views(5)(buf.ctypes.data)
    assert np.shares_memory(view, buf)
    view[...] = np.arange(5.0)  # what the callbacks do with IPOPT's pointers: one memcpy
    np.testing.assert_array_equal(buf, np.arange(5.0))
    assert _capi._views(0)(None).size == 0  # m = 0: IPOPT may pass NULL


# -- the hot path: IPOPT's callbacks through the C interface -----------------------------------
def _c_call_sequence(prob, x, lam, sigma, new_x=True):
    """What IPOPT does at one point: f (with ``new_x``), then c, ∇f, J and H at the same
    point (``new_x=False``), through the C callbacks, into IPOPT-owned buffers."""
    import ctypes

    b = prob._capi
    n, m, nj, nh = b.n, b.m, b.nnz_jac, b.nnz_hess
    f_cb, g_cb, grad_cb, jac_cb, h_cb = b._callbacks[:5]
    obj, g, grad, jv, hv = ctypes.c_double(), np.zeros(m), np.zeros(n), np.zeros(nj), np.zeros(nh)
    px, pl = x.ctypes.data, lam.ctypes.data
    assert f_cb(n, px, new_x, ctypes.addressof(obj), None)
    assert g_cb(n, px, False, m, g.ctypes.data, None)
    assert grad_cb(n, px, False, grad.ctypes.data, None)
    assert jac_cb(n, px, False, m, nj, None, None, jv.ctypes.data, None)
    assert h_cb(n, px, False, sigma, m, pl, True, nh, None, None, hv.ctypes.data, None)
    return obj.value, g, grad, jv, hv


def test_c_callbacks_match_dense_jax_and_use_new_x(monkeypatch):
    """The direct path (views of IPOPT's memory, IPOPT's new_x, one flat output per
    executable) writes f, c, ∇f, J and the lower Hessian triangle matching dense JAX; a
    point rewritten in place (IPOPT reuses its x buffer) is a miss, and with new_x=False the
    x-cache hits without comparing x."""
    import jax

    from sparseopt_adapters import _host

    compares = []
    same = _host.XCache._same
    monkeypatch.setattr(_host.XCache, "_same", lambda self, x: compares.append(1) or same(self, x))
    n = 9
    x0 = np.where(np.arange(n) % 2 == 0, -1.2, 1.0)
    prob = ipopt.Problem(chained_rosenbrock, x0,
                         constraints=so.NonlinearConstraint(luksan_vlcek_constraints, 0.0, 0.0),
                         backend="libipopt", libipopt=WHEEL_LIB)
    nlp = prob.nlp
    jr, jc = prob.jacobianstructure()
    hr, hc = prob.hessianstructure()
    # IPOPT gets the Jacobian column-major (CasADi's order; row-major entries gave MUMPS 4 %
    # more fill on the benchmark's control problem at n = 1e5)
    assert np.all(np.diff(jc.astype(np.int64) * prob.m + jr) > 0)
    x = np.array(x0)  # IPOPT's buffer: the same memory at every call
    lam = np.linspace(-1.0, 2.0, prob.m)
    points = [x0, x0 + 0.1, x0]
    for point in points:
        x[:] = point
        f, g, grad, jv, hv = _c_call_sequence(prob, x, lam, 0.7)
        assert f == pytest.approx(float(chained_rosenbrock(point)), rel=1e-14)
        np.testing.assert_allclose(g, luksan_vlcek_constraints(point), rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(grad, jax.grad(chained_rosenbrock)(point), rtol=1e-13)
        J = np.zeros((prob.m, n))
        J[jr, jc] = jv
        np.testing.assert_allclose(J, jax.jacfwd(luksan_vlcek_constraints)(point), rtol=1e-13,
                                   atol=1e-13)
        lag = lambda z: 0.7 * chained_rosenbrock(z) + lam @ luksan_vlcek_constraints(z)  # noqa: E731
        H = np.zeros((n, n))
        H[hr, hc] = hv
        np.testing.assert_allclose(H, np.tril(jax.hessian(lag)(point)), rtol=1e-12,
                                   atol=1e-12)
    assert nlp.evals == {"fc": 3, "gj": 3, "h": 3}  # one evaluation per point and quantity
    assert nlp.calls["objective"] == nlp.calls["jacobian"] == 3
    # compared only at new_x=True (f) and for the first ∇f at a point: 2 per point after the
    # first, never for c and J (new_x=False after an evaluation at this point)
    assert len(compares) == 2 * (len(points) - 1)
    # and the same point again with new_x=True is a hit after one compare: no evaluation
    _c_call_sequence(prob, x, lam, 0.7, new_x=True)
    assert nlp.evals == {"fc": 3, "gj": 3, "h": 4}
    prob.close()


def test_hot_path_transfers_no_pytrees_and_places_args_once(monkeypatch):
    """Each executable returns one flat vector (zero-copy to numpy): no jax.device_get of a
    pytree per call; numpy arguments are placed on the device once, at construction."""
    import jax

    def f(x, a):
        return jnp.sum((x - a) ** 2)

    a = np.arange(4.0)
    probs = [ipopt.Problem(f, np.zeros(4), (a,), constraints=HS071["constraints"],
                           backend=b, libipopt=WHEEL_LIB if b == "libipopt" else None)
             for b in ("cyipopt", "libipopt")]
    gets = []
    real = jax.device_get
    monkeypatch.setattr(jax, "device_get", lambda t: gets.append(1) or real(t))
    for prob in probs:
        assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(prob.nlp.dyn))
        x, info = prob.solve()
        assert info["status"] == 0 and prob.nlp.evals["fc"] > 3
        prob.close()
    assert gets == []


class _Shifted(ipopt.Problem):
    """A subclass redefining a callback: the libipopt backend must call it, as cyipopt does."""

    def objective(self, x):
        return super().objective(x) + 1.0


def test_a_redefined_callback_is_called_by_both_backends():
    kw = dict(HS071)
    out = []
    for backend in ("cyipopt", "libipopt"):
        prob = _Shifted(hs071, kw["x0"], bounds=kw["bounds"], constraints=kw["constraints"],
                        backend=backend, libipopt=WHEEL_LIB if backend == "libipopt" else None)
        x, info = prob.solve()
        out.append(info["obj_val"])
        prob.close()
    assert out[0] == pytest.approx(17.014017 + 1.0, rel=1e-6)
    assert out[1] == pytest.approx(out[0], rel=1e-12)


def test_callback_stop_and_nan_gradient_agree():
    ref, ref_seen = trace("cyipopt", HS071, stop_at=3)
    res, seen = trace("libipopt", HS071, stop_at=3)
    assert res.status == ref.status == 5 and res.nit == ref.nit == 3
    np.testing.assert_allclose(seen, ref_seen, rtol=1e-10, atol=1e-10)
    assert "callback asked to stop at iteration 3" in res.message
    # a NaN gradient at x0 stops IPOPT (status -13) on both backends, with the same message
    nan_grad = dict(fun=lambda x: jnp.sum(jnp.sqrt(x**2)), x0=np.zeros(3))
    a, _ = trace("cyipopt", nan_grad)
    b, _ = trace("libipopt", nan_grad)
    assert a.status == b.status == -13 and a.message == b.message
    assert b.nonfinite["gradient"] >= 1


class HessianBoom(RuntimeError):
    pass


def raising_hessian(*_):
    raise HessianBoom("hessian exploded")


@pytest.mark.parametrize("backend", ["cyipopt", "libipopt"])
def test_raising_hessian_stops_ipopt_and_is_reraised(backend, monkeypatch):
    kw = dict(HS071)
    prob = ipopt.Problem(kw.pop("fun"), kw.pop("x0"), **kw, backend=backend,
                         libipopt=WHEEL_LIB if backend == "libipopt" else None)
    # the compiled Hessian raises at runtime (monkeypatch: a cached setup is left intact)
    monkeypatch.setattr(prob.nlp, "_h", raising_hessian)
    with pytest.raises(HessianBoom, match="hessian exploded") as ei:
        prob.solve()
    frames = [f.name for f in traceback.extract_tb(ei.value.__traceback__)]
    assert "raising_hessian" in frames  # the original traceback is kept
    assert prob.nlp.calls["hessian"] == 1  # IPOPT stopped at once
    prob.close()


def test_exception_in_our_own_callback_code_is_reraised(monkeypatch):
    """Not only the NLP's errors: a failure in the C-callback layer itself surfaces too."""
    kw = dict(HS071)
    prob = ipopt.Problem(kw.pop("fun"), kw.pop("x0"), **kw, backend="libipopt",
                         libipopt=WHEEL_LIB)
    # a wrong length: the copy into IPOPT's buffer fails
    monkeypatch.setattr(prob.nlp, "gradient", lambda x, new_x=None: np.zeros(3))
    with pytest.raises(ValueError, match="broadcast"):
        prob.solve()
    prob.close()
    prob.close()  # idempotent


def test_user_callback_exception_is_reraised():
    def cb(state):
        if state.nit == 2:
            raise KeyError("callback failed")

    kw = dict(HS071)
    with pytest.raises(KeyError, match="callback failed"):
        ipopt.minimize(kw.pop("fun"), kw.pop("x0"), **kw, callback=cb, backend="libipopt",
                       libipopt=WHEEL_LIB)


def test_problem_reuse_warm_start_and_current_iterate():
    kw = dict(HS071)
    probs = [ipopt.Problem(kw["fun"], kw["x0"], bounds=kw["bounds"],
                           constraints=kw["constraints"], backend=b,
                           libipopt=WHEEL_LIB if b == "libipopt" else None)
             for b in ("cyipopt", "libipopt")]
    outs = []
    for prob in probs:
        x, info = prob.solve()
        x2, info2 = prob.solve(np.full(4, 2.0))  # reuses the C problem
        prob.add_option("warm_start_init_point", "yes")
        x3, info3 = prob.solve(x, lagrange=info["mult_g"], zl=info["mult_x_L"],
                               zu=info["mult_x_U"])
        outs.append((x, x2, x3, info3["status"], prob.nlp.iteration))
        with pytest.raises(RuntimeError, match="during a call to solve"):
            prob.get_current_iterate()
        prob.close()
    for a, b in zip(outs[0], outs[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    assert outs[1][4] < 8  # the warm start takes fewer than the cold start's 8 iterations


def test_options_are_checked_by_the_chosen_library():
    f = lambda x: jnp.sum((x - 1.0) ** 2)
    with pytest.raises(ValueError, match=r"not_an_option.*not a valid option"):
        ipopt.minimize(f, np.zeros(2), options={"not_an_option": 1}, backend="libipopt",
                       libipopt=WHEEL_LIB)
    res = ipopt.minimize(f, np.zeros(2), options={"tol": 1, "maxiter": np.int64(50),
                                                  "mumps_pivot_order": 5},
                         backend="libipopt", libipopt=WHEEL_LIB)
    assert res.success
    lib = res.ipopt_library
    assert lib["backend"] == "libipopt" and lib["version"] == "3.14.11"
    assert lib["linear_solver"].startswith("MUMPS") and lib["ordering"].startswith(
        "mumps_pivot_order=5")


# -- which library ---------------------------------------------------------------------------
def test_library_errors_name_the_file_and_the_problem(tmp_path, monkeypatch):
    f = lambda x: jnp.sum(x**2)
    with pytest.raises(ValueError, match="backend must be one of"):
        ipopt.minimize(f, np.zeros(2), backend="ipopt")
    with pytest.raises(ValueError, match="only with backend='libipopt'"):
        ipopt.minimize(f, np.zeros(2), libipopt=WHEEL_LIB)
    missing = tmp_path / "libipopt.so"
    with pytest.raises(_libraries.LibIpoptError, match=r"libipopt\.so.*does not exist"):
        ipopt.minimize(f, np.zeros(2), backend="libipopt", libipopt=missing)
    missing.write_text("not a shared library")
    with pytest.raises(_libraries.LibIpoptError, match="could not be loaded"):
        ipopt.minimize(f, np.zeros(2), backend="libipopt", libipopt=missing)
    libm = next((p for p in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib64/libm.so.6",
                             "/lib/aarch64-linux-gnu/libm.so.6") if os.path.exists(p)), None)
    if libm is not None:
        with pytest.raises(_libraries.LibIpoptError,
                           match="lacks the IPOPT C-interface function.*CreateIpoptProblem"):
            ipopt.minimize(f, np.zeros(2), backend="libipopt", libipopt=libm)
    # the environment variable is used when no path is passed, and its errors say so
    monkeypatch.setenv(_libraries.ENV_VAR, str(tmp_path / "nope.so"))
    with pytest.raises(_libraries.LibIpoptError, match=r"from \$SPARSEOPT_LIBIPOPT"):
        ipopt.minimize(f, np.zeros(2), backend="libipopt")
    monkeypatch.setenv(_libraries.ENV_VAR, WHEEL_LIB)
    res = ipopt.minimize(f, np.zeros(2), backend="libipopt")
    assert res.success and res.ipopt_library["source"] == "$SPARSEOPT_LIBIPOPT"


def test_discovery_lists_the_wheel_library():
    found = dict(_libraries.candidates())
    assert found["cyipopt-wheels"] == WHEEL_LIB
    lib = _libraries.resolve()  # the first usable candidate
    assert lib.version.startswith("3.14") and lib.source in found


def _run(code: str, timeout=240):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1")
    env.pop(_libraries.ENV_VAR, None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_casadi_library_next_to_cyipopt_in_one_process():
    """Two IPOPT/MUMPS builds in one process (RTLD_LOCAL): casadi's lib gives casadi's run."""
    if _libraries._package_dir("casadi") is None:
        pytest.skip("casadi not installed (bench extra)")
    out = _run("""
        import numpy as np, jax.numpy as jnp, scipy.optimize as so
        from sparseopt_adapters import ipopt
        from sparseopt_adapters.ipopt import _capi
        def f(x):
            return jnp.sum(100.0 * (x[:-1] ** 2 - x[1:]) ** 2 + (x[:-1] - 1.0) ** 2)
        def c(x):
            a, b, d = x[:-2], x[1:-1], x[2:]
            return (3 * b**3 + 2 * d - 5 + jnp.sin(b - d) * jnp.sin(b + d) + 4 * b
                    - a * jnp.exp(a - b) - 3)
        x0 = np.where(np.arange(1000) % 2 == 0, -1.2, 1.0)
        kw = dict(constraints=so.NonlinearConstraint(c, 0.0, 0.0),
                  options={"mu_strategy": "monotone"})
        a = ipopt.minimize(f, x0, **kw)                       # cyipopt's IPOPT 3.14.11
        b = ipopt.minimize(f, x0, **kw, backend="libipopt")   # discovery: casadi's 3.14.19
        c_ = ipopt.minimize(f, x0, **kw, backend="libipopt",
                            libipopt=_capi.cyipopt_library_path())
        print(a.nit, b.nit, c_.nit, repr(a.fun), repr(b.fun), b.ipopt_library["source"],
              b.ipopt_library["version"], b.ipopt_library["linear_solver"])
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    nit_a, nit_b, nit_c, fa, fb, source, version, solver = out.stdout.split()[:8]
    # CasADi 3.8.2 nlpsol('ipopt') itself: 6 iterations, f* = 6.2324586324379885
    assert (source, version, solver) == ("casadi", "3.14.19", "MUMPS")
    assert int(nit_b) == 6 and float(fb) == pytest.approx(6.2324586324379885, rel=1e-10)
    assert nit_a == nit_c and float(fa) == pytest.approx(6.2324586324379885, rel=1e-8)


def test_importing_the_adapter_loads_no_extra_library():
    out = _run("""
        import sparseopt_adapters.ipopt
        from sparseopt_adapters.ipopt import _libraries
        maps = open("/proc/self/maps").read()
        print("casadi" in maps, len(_libraries._LOADED))
    """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["False", "0"]
