"""Compressed sparse Jacobians / Hessians against dense JAX autodiff."""

import warnings

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from corpus import HESSIAN_CASES, JACOBIAN_CASES
from jax import lax

import sparseopt_adapters as sa

TOL = dict(rtol=1e-12, atol=1e-13)


# jitted dense references (eager jax.hessian dispatches op by op: seconds per call)
def jacfwd(f, **kw):
    return jax.jit(jax.jacfwd(f, **kw))


def jacrev(f, **kw):
    return jax.jit(jax.jacrev(f, **kw))


def hessian(f, **kw):
    return jax.jit(jax.hessian(f, **kw))

# corpus cases that take several seconds each (long scans, big unrolls): run with -m slow
SLOW_CASES = {"scan_long_fixed_point", "bratu_2d", "pytree_in_out", "two_argnums",
              "lu_factor"}
# detection-only cases that cannot be evaluated
NOT_RUNNABLE = {"while_widening": "its while_loop never terminates when run (c[0] is fixed)"}


def _random_like(tree, rng):
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(rng.normal(size=np.shape(x)))
        if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x,
        tree,
    )


def _random_args(case, seed=5):
    rng = np.random.default_rng(seed)
    nums = case.argnums if isinstance(case.argnums, tuple) else (case.argnums,)
    args = list(case.args)
    for i in nums:
        args[i] = _random_like(args[i], rng)
    return args


def _params(cases):
    def marks(c):
        if c.name in NOT_RUNNABLE:
            return [pytest.mark.skip(reason=NOT_RUNNABLE[c.name])]
        return [pytest.mark.slow] if c.name in SLOW_CASES else []

    return [pytest.param(c, id=c.name, marks=marks(c)) for c in cases]


# -- the detection corpus, end to end ---------------------------------------------------------
@pytest.mark.parametrize("case", _params(JACOBIAN_CASES))
def test_corpus_jacobians_match_dense_autodiff(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.DenseColoringWarning)
        warnings.simplefilter("ignore", sa.SparsityWarning)
        jac = sa.sparse_jacobian(case.f, *case.args, argnums=case.argnums)
    args = _random_args(case)
    check = sa.check_jacobian(jac, *args)
    _assert_check(check, case, jac)


def _assert_check(check, case, obj):
    """Dense derivatives agree to 1e-12; random products to 1e-8 (a few corpus functions
    round through float32 internally, which random tangents feel and one-hot ones do not)."""
    assert check.max_error_dense is not None
    assert check.max_error_outside == 0, (case.name, obj, check)
    assert check.max_error_dense <= 1e-12 * check.scale + 1e-13, (case.name, obj, check)
    assert check.max_error_products <= 1e-6 * check.scale + 1e-13, (case.name, obj, check)


@pytest.mark.parametrize("case", _params(HESSIAN_CASES))
def test_corpus_hessians_match_dense_autodiff(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.DenseColoringWarning)
        warnings.simplefilter("ignore", sa.SparsityWarning)
        hess = sa.sparse_hessian(case.f, *case.args, argnums=case.argnums)
    args = _random_args(case)
    _assert_check(sa.check_hessian(hess, *args), case, hess)


# -- functions with known structure, every mode -------------------------------------------------
def residual(x):
    """Rectangular (9 outputs, 12 inputs): a band, one dense row, one dense column."""
    band = x[1:10] ** 2 - x[:9] + jnp.sin(x[2:11])
    band = band.at[0].add(jnp.sum(jnp.cos(x)))  # dense row
    return band + 0.1 * x[11] ** 3  # dense column


def arrow_residual(x):
    return jnp.concatenate([jnp.sum(x**2)[None], x[1:] ** 3 + x[0]])


def pattern_of_jacobian(f, x, n_points=3):
    mask = None
    for s in range(n_points):
        xr = jnp.asarray(np.random.default_rng(s).normal(size=x.shape))
        d = np.abs(np.asarray(jacfwd(f)(xr))) > 0
        mask = d if mask is None else mask | d
    return sa.SparsityPattern.from_dense(mask)


@pytest.mark.parametrize("f,n", [(residual, 12), (arrow_residual, 30)])
def test_jacobian_modes_and_chunks_equal_jacfwd_and_jacrev(f, n):
    x = jnp.asarray(np.random.default_rng(1).normal(size=n))
    pattern = sa.jacobian_sparsity(f, x)
    assert pattern == pattern_of_jacobian(f, x)  # detection is exact here
    fwd = np.asarray(jacfwd(f)(x))
    rev = np.asarray(jacrev(f)(x))
    np.testing.assert_allclose(fwd, rev, **TOL)
    for mode, chunk_size in (("auto", None), ("forward", None), ("forward", 2),
                             ("reverse", None), ("reverse", 1), ("bidirectional", None),
                             ("bidirectional", 2)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sa.DenseColoringWarning)
            jac = sa.sparse_jacobian(f, x, mode=mode, pattern=pattern, chunk_size=chunk_size)
        if mode != "auto":
            assert jac.mode == mode
        dense = np.asarray(jac(x).todense())
        np.testing.assert_allclose(dense, fwd, **TOL, err_msg=f"{jac!r} chunk={chunk_size}")
        np.testing.assert_allclose(dense, rev, **TOL)


def test_arrow_jacobian_auto_is_bidirectional_with_few_products():
    x = jnp.linspace(0.1, 1.0, 40)
    jac = sa.sparse_jacobian(arrow_residual, x)
    assert jac.mode == "bidirectional" and jac.n_colors <= 4
    assert jac.jvp_count + jac.vjp_count == jac.n_colors
    np.testing.assert_allclose(jac(x).todense(), jacfwd(arrow_residual)(x), **TOL)


def rosenbrock(x):
    return jnp.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def band4_energy(x):
    return sum(jnp.sum(jnp.cos(x[k:] * x[:-k]) * (1 + k * x[k:] ** 2)) for k in range(1, 5))


def arrow_energy(x):
    return jnp.sum(x[:-1] ** 4) + x[-1] * jnp.sum(jnp.sin(x[:-1])) + x[-1] ** 4


@pytest.mark.parametrize("f,n", [(rosenbrock, 25), (band4_energy, 40), (arrow_energy, 30)])
def test_hessian_methods_equal_jax_hessian(f, n):
    x = jnp.asarray(np.random.default_rng(2).normal(size=n))
    pattern = sa.hessian_sparsity(f, x)
    ref = np.asarray(hessian(f)(x))
    tol = dict(rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    for method, chunk_size in (("auto", None), ("star", None), ("acyclic", None),
                               ("acyclic", 2)):
        hess = sa.sparse_hessian(f, x, method=method, pattern=pattern, chunk_size=chunk_size)
        if method != "auto":
            assert hess.method == method
        np.testing.assert_allclose(np.asarray(hess(x).todense()), ref, **tol,
                                   err_msg=f"{hess!r} chunk={chunk_size}")
        low = hess.lower_pattern
        assert low == hess.pattern.lower()
        np.testing.assert_allclose(np.asarray(hess.lower_values(x)), ref[low.rows, low.cols],
                                   **tol)


def test_hessian_color_counts_through_the_function():
    x = jnp.ones(60)
    assert sa.sparse_hessian(arrow_energy, x, method="star").n_colors <= 3
    star = sa.sparse_hessian(band4_energy, x, method="star")
    acyc = sa.sparse_hessian(band4_energy, x, method="acyclic")
    assert acyc.n_colors < star.n_colors
    assert sa.sparse_hessian(band4_energy, x).n_colors == acyc.n_colors


def test_auto_picks_reverse_when_outputs_are_few():
    def f(x):
        return jnp.stack([jnp.sum(x), jnp.sum(x**2), jnp.sum(jnp.sin(x))])

    x = jnp.linspace(0, 1, 200)
    jac = sa.sparse_jacobian(f, x)
    assert jac.mode == "reverse" and jac.n_colors == 3
    np.testing.assert_allclose(jac(x).todense(), jacrev(f)(x), **TOL)


def test_auto_falls_back_when_a_direction_is_unavailable():
    def loop(x):  # while_loop: JAX has no reverse mode for it
        return lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] * 1.5, c[1] + 1),
                              (jnp.stack([jnp.sum(x), jnp.sum(x**2)]), 0))[0]

    x = jnp.linspace(0, 1, 50)
    pattern = sa.SparsityPattern.from_dense(np.ones((2, 50), bool))
    jac = sa.sparse_jacobian(loop, x, pattern=pattern)
    assert jac.mode == "forward"  # reverse would be 2 products, but cannot be traced
    np.testing.assert_allclose(jac(x).todense(), jacfwd(loop)(x), **TOL)

    @jax.custom_vjp
    def cube(x):
        return x**3

    cube.defvjp(lambda x: (x**3, x), lambda x, g: (3 * x**2 * g,))

    def tall(x):  # forward mode is impossible through custom_vjp
        return jnp.concatenate([cube(x), cube(x) * x[0]])

    x = jnp.linspace(0.5, 1.5, 6)
    tall_pattern = sa.SparsityPattern.from_dense(np.abs(np.asarray(jacrev(tall)(x))) > 0)
    jac = sa.sparse_jacobian(tall, x, pattern=tall_pattern)
    assert jac.mode == "reverse"
    np.testing.assert_allclose(jac(x).todense(), jacrev(tall)(x), **TOL)


# -- pytrees, argnums, extra arguments ---------------------------------------------------------
def test_pytree_argument_and_tuple_argnums():
    def f(params, data, scale):
        w, b = params["w"], params["b"]
        return {"r": scale * (w[1:] * w[:-1] - data), "s": b * jnp.sum(w)}

    params = {"w": jnp.linspace(1, 2, 7), "b": jnp.asarray(0.5)}
    data = jnp.arange(6.0)
    jac = sa.sparse_jacobian(f, params, data, 2.0)
    flat = lambda p: jax.flatten_util.ravel_pytree(f(p, data, 2.0))[0]
    x, unravel = jax.flatten_util.ravel_pytree(params)
    ref = jacfwd(lambda z: flat(unravel(z)))(x)
    np.testing.assert_allclose(jac(params, data, 2.0).todense(), ref, **TOL)
    # the non-differentiated arguments change per call without retracing issues
    np.testing.assert_allclose(jac(params, data + 1, 3.0).todense()[:6],
                               jacfwd(lambda z: jax.flatten_util.ravel_pytree(
                                   f(unravel(z), data + 1, 3.0))[0])(x)[:6], **TOL)

    def g(x, y):
        return jnp.concatenate([x * y[: x.size], y[1:] ** 2])

    x, y = jnp.linspace(1, 2, 3), jnp.linspace(2, 3, 5)
    jac = sa.sparse_jacobian(g, x, y, argnums=(0, 1))
    ref = jacfwd(lambda z: g(z[:3], z[3:]))(jnp.concatenate([x, y]))
    np.testing.assert_allclose(jac(x, y).todense(), ref, **TOL)
    jac1 = sa.sparse_jacobian(g, x, y, argnums=1)
    np.testing.assert_allclose(jac1(x, y).todense(), jacfwd(g, argnums=1)(x, y), **TOL)


def test_hessian_with_extra_arguments_and_argnums():
    def f(a, x):
        return jnp.sum(a * x[1:] * x[:-1]) + jnp.sum(x**4)

    a = jnp.linspace(1, 2, 9)
    x = jnp.linspace(-1, 1, 10)
    hess = sa.sparse_hessian(f, a, x, argnums=1)
    np.testing.assert_allclose(hess(a, x).todense(), hessian(f, argnums=1)(a, x), **TOL)


# -- jit, vmap, no retrace ---------------------------------------------------------------------
def test_calls_do_not_retrace():
    traces = []

    def f(x):
        traces.append(1)
        return x[1:] * x[:-1] + jnp.sin(x[:-1])

    x = jnp.linspace(0, 1, 20)
    jac = sa.sparse_jacobian(f, x)
    jac.values(x)
    n0 = len(traces)
    for k in range(3):
        jac.values(x + k)
        jac(x * k)
    assert len(traces) == n0

    def e(x):
        traces.append(1)
        return rosenbrock(x)

    hess = sa.sparse_hessian(e, x)
    hess.values(x)
    hess.lower_values(x)
    n1 = len(traces)
    for k in range(3):
        hess.values(x + k)
        hess.lower_values(x - k)
        hess(x)
    assert len(traces) == n1


def test_jit_and_vmap_compatible():
    x = jnp.linspace(0.2, 1, 12)
    jac = sa.sparse_jacobian(residual, x)
    ref = jac.values(x)
    np.testing.assert_allclose(jax.jit(jac.values)(x), ref, rtol=0, atol=0)
    np.testing.assert_allclose(jax.jit(lambda z: jac(z).todense())(x), jac(x).todense())
    xs = jnp.stack([x, 2 * x, 3 * x])
    batched = jax.vmap(jac.values)(xs)
    for i in range(3):
        np.testing.assert_allclose(batched[i], jac.values(xs[i]), **TOL)
    hess = sa.sparse_hessian(band4_energy, x, method="acyclic")
    np.testing.assert_allclose(jax.jit(hess.lower_values)(x), hess.lower_values(x), **TOL)
    # a derivative built inside a trace (from a known pattern) keeps working afterwards
    holder = {}
    pattern = jac.pattern

    @jax.jit
    def build_and_call(z):
        holder["jac"] = sa.sparse_jacobian(residual, z, pattern=pattern)
        return holder["jac"].values(z)

    np.testing.assert_allclose(build_and_call(x), ref, **TOL)
    np.testing.assert_allclose(holder["jac"].values(x), ref, **TOL)


# -- outputs -------------------------------------------------------------------------------------
def test_bcoo_and_scipy_outputs_follow_the_pattern():
    x = jnp.linspace(0.2, 1, 12)
    jac = sa.sparse_jacobian(residual, x)
    J = jac(x)
    assert J.shape == (9, 12) and J.indices_sorted and J.unique_indices
    np.testing.assert_array_equal(np.asarray(J.indices), np.stack([jac.pattern.rows,
                                                                   jac.pattern.cols], 1))
    v = np.asarray(jac.values(x))
    dense = np.asarray(J.todense())
    for fmt, cls in (("csr", sp.csr_array), ("csc", sp.csc_array), ("coo", sp.coo_array)):
        a = jac.to_scipy(v, fmt)
        assert isinstance(a, cls)
        np.testing.assert_array_equal(a.toarray(), dense)
    assert jac.to_scipy(v).has_canonical_format
    with pytest.raises(ValueError, match="expected 35 values|expected"):
        jac.to_scipy(v[:-1])
    with pytest.raises(ValueError, match="format"):
        jac.to_scipy(v, "bsr")
    hess = sa.sparse_hessian(band4_energy, jnp.ones(10))
    full = hess.to_scipy(np.asarray(hess.values(x[:10])))
    low = hess.to_scipy(np.asarray(hess.lower_values(x[:10])), "coo")
    np.testing.assert_allclose(full.toarray(), hessian(band4_energy)(x[:10]), **TOL)
    np.testing.assert_allclose(low.toarray(), np.tril(full.toarray()), **TOL)
    assert np.all(low.row >= low.col)


def test_repr_and_str():
    x = jnp.linspace(0.2, 1, 12)
    jac = sa.sparse_jacobian(lambda z: z[1:] * z[:-1], x, mode="forward")
    assert repr(jac) == "SparseJacobian(11×12, nnz=22, forward, 2 colors)"
    assert str(jac).splitlines()[1].startswith("0 1 ·")
    hess = sa.sparse_hessian(rosenbrock, x, method="star")
    assert repr(hess) == "SparseHessian(12×12, nnz=34, star, 3 colors)"


# -- Lagrangian ----------------------------------------------------------------------------------
def test_lagrangian_hessian_matches_dense():
    def f(x, w):
        return jnp.sum(w * x**4) + x[0] * x[-1]

    def c(x, w):
        return jnp.stack([x[1] * x[2] - w[0], jnp.sum(x[3:6] ** 2), x[6] + x[7]])

    x = jnp.linspace(-1, 1, 9)
    w = jnp.linspace(1, 2, 9)
    lag = sa.sparse_lagrangian_hessian(f, c, x, w)
    assert lag.n_constraints == 3
    sigma, lam = 0.7, jnp.array([2.0, -1.5, 3.0])

    def L(z):
        return sigma * f(z, w) + lam @ c(z, w)

    ref = np.asarray(hessian(L)(x))
    low = lag.lower_pattern
    assert low == lag.pattern.lower()
    assert np.all(ref[~lag.pattern.todense()] == 0)  # the union pattern covers everything
    np.testing.assert_allclose(np.asarray(lag(x, sigma, lam, w)), ref[low.rows, low.cols], **TOL)
    np.testing.assert_allclose(jax.jit(lag)(x, sigma, lam, w), lag(x, sigma, lam, w), **TOL)
    # sigma = 0: the constraints alone (x[0] * x[-1] and the x**4 terms disappear)
    ref0 = np.asarray(hessian(lambda z: lam @ c(z, w))(x))
    np.testing.assert_allclose(np.asarray(lag(x, 0.0, lam, w)), ref0[low.rows, low.cols], **TOL)
    assert sa.check_hessian(lag, x, sigma, lam, w, **TOL).passed
    # no constraints
    lag_f = sa.sparse_lagrangian_hessian(f, None, x, w)
    reff = np.asarray(hessian(f)(x, w)) * 2.0
    lf = lag_f.lower_pattern
    np.testing.assert_allclose(np.asarray(lag_f(x, 2.0, jnp.zeros(0), w)),
                               reff[lf.rows, lf.cols], **TOL)


# -- reuse, persistence ---------------------------------------------------------------------------
def test_coloring_save_load_reuse(tmp_path):
    x = jnp.linspace(0.2, 1, 12)
    jac = sa.sparse_jacobian(residual, x, mode="bidirectional")
    jac.coloring.save(tmp_path / "c.npz")
    again = sa.sparse_jacobian(residual, x, coloring=sa.ColoringResult.load(tmp_path / "c.npz"))
    assert again.coloring == jac.coloring
    np.testing.assert_array_equal(again.values(x), jac.values(x))
    hess = sa.sparse_hessian(band4_energy, x, method="acyclic")
    hess.coloring.save(tmp_path / "h.npz")
    again = sa.sparse_hessian(band4_energy, x, coloring=sa.ColoringResult.load(tmp_path / "h.npz"))
    np.testing.assert_array_equal(again.values(x), hess.values(x))


def test_shape_dtype_struct_example_arguments():
    spec = jax.ShapeDtypeStruct((12,), jnp.float64)
    jac = sa.sparse_jacobian(residual, spec)
    x = jnp.linspace(0.2, 1, 12)
    np.testing.assert_allclose(jac(x).todense(), jacfwd(residual)(x), **TOL)


# -- errors ----------------------------------------------------------------------------------------
def test_errors_say_what_came_in():
    x = jnp.linspace(0.2, 1, 12)
    with pytest.raises(ValueError, match=r"pattern has shape \(3, 3\).*\(9, 12\)"):
        sa.sparse_jacobian(residual, x, pattern=sa.SparsityPattern.identity(3))
    with pytest.raises(ValueError, match="scalar-valued"):
        sa.sparse_hessian(residual, x)
    with pytest.raises(ValueError, match="argnums=3 is out of range"):
        sa.sparse_jacobian(residual, x, argnums=3)
    with pytest.raises(TypeError, match="floating-point"):
        sa.sparse_jacobian(lambda i: i * 2.0, jnp.arange(4))
    with pytest.raises(TypeError, match="example arguments"):
        sa.sparse_jacobian(residual)
    with pytest.raises(ValueError, match="chunk_size"):
        sa.sparse_jacobian(residual, x, chunk_size=0)
    with pytest.raises(TypeError, match="SparsityPattern"):
        sa.sparse_jacobian(residual, x, pattern=np.ones((9, 12)))
    jac = sa.sparse_jacobian(residual, x)
    with pytest.raises(TypeError, match="built for 1"):
        jac.values(x, x)
    with pytest.raises(ValueError, match="forward/reverse/bidirectional"):
        sa.sparse_jacobian(jnp.sin, x, coloring=sa.sparse_hessian(rosenbrock, x).coloring)
    with pytest.raises(TypeError, match="SparseJacobian"):
        sa.check_jacobian(sa.sparse_hessian(rosenbrock, x), x)


def test_check_reports_a_missing_entry():
    x = jnp.linspace(0.2, 1, 12)
    p = sa.jacobian_sparsity(residual, x)
    keep = np.ones(p.nnz, bool)
    keep[5] = False  # drop one true nonzero
    bad = sa.SparsityPattern(p.rows[keep], p.cols[keep], p.shape)
    jac = sa.sparse_jacobian(residual, x, pattern=bad)
    check = sa.check_jacobian(jac, x)
    assert not check.passed and check.max_error_outside > 0
    with pytest.raises(sa.DerivativeMismatchError, match="missing entries"):
        sa.check_jacobian(jac, x, raise_on_error=True)


def test_dense_function_warns():
    with pytest.warns(sa.DenseColoringWarning, match="does not pay"):
        sa.sparse_jacobian(lambda x: jnp.outer(x, x).ravel()[:20] * jnp.sum(x), jnp.ones(20))


# -- setup paid once (issue 14 item 3) ---------------------------------------------------------
_COMPILES = [0]


def _on_event(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


def compilations(thunk):
    """The number of XLA compilations ``thunk()`` triggers."""
    before = _COMPILES[0]
    jax.block_until_ready(thunk())
    return _COMPILES[0] - before


@pytest.fixture
def fresh_cache():
    sa.clear_cache()
    sa.set_cache_size(64)
    yield
    sa.set_cache_size(64)
    sa.clear_cache()


def rosenbrock_res(x):
    return x[1:] - x[:-1] ** 2


def segment_residual(x, idx, k):
    return jax.ops.segment_sum(x**2, idx, num_segments=4) * k + jnp.sin(x[:4])


def test_setup_cache_hits_and_misses(fresh_cache):
    x = jnp.linspace(0.1, 1, 8)
    idx = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])

    def misses(build):
        before = sa.cache_info()
        build()
        after = sa.cache_info()
        return after["misses"] - before["misses"], after["hits"] - before["hits"]

    f = segment_residual
    assert misses(lambda: sa.sparse_jacobian(f, x, idx, 2)) == (1, 0)
    assert misses(lambda: sa.sparse_jacobian(f, x + 1, idx, 2)) == (0, 1)  # same call
    assert misses(lambda: sa.sparse_jacobian(rosenbrock_res, jnp.ones(9))) == (1, 0)
    assert misses(lambda: sa.sparse_jacobian(rosenbrock_res, jnp.ones(10))) == (1, 0)  # shape
    assert misses(lambda: sa.sparse_jacobian(rosenbrock_res, jnp.zeros(10))) == (0, 1)
    assert misses(lambda: sa.sparse_jacobian(f, x, idx, 3)) == (1, 0)  # new static arg
    assert misses(lambda: sa.sparse_jacobian(f, x, idx[::-1], 2)) == (1, 0)  # new index values
    assert misses(lambda: sa.sparse_jacobian(f, x, idx, 2, mode="forward")) == (1, 0)
    assert misses(lambda: sa.sparse_jacobian(lambda *a: f(*a), x, idx, 2)) == (1, 0)  # new fn
    e = rosenbrock
    assert misses(lambda: sa.sparse_hessian(e, x)) == (1, 0)
    assert misses(lambda: sa.sparse_hessian(e, x)) == (0, 1)
    assert misses(lambda: sa.sparse_hessian(e, x, mode="rev_over_rev")) == (1, 0)
    c = lambda z: z[1:] * z[:-1]  # noqa: E731
    assert misses(lambda: sa.sparse_lagrangian_hessian(e, c, x)) == (1, 0)
    assert misses(lambda: sa.sparse_lagrangian_hessian(e, c, x)) == (0, 1)
    sa.set_cache_size(0)  # opt out: every call sets up anew
    assert misses(lambda: sa.sparse_hessian(e, x)) == (1, 0)
    assert misses(lambda: sa.sparse_hessian(e, x)) == (1, 0)
    assert sa.cache_info()["size"] == 0


def test_repeat_build_neither_retraces_nor_recompiles(fresh_cache):
    traces = []

    def f(x):
        traces.append(1)
        return x[1:] * x[:-1] + jnp.sin(x[:-1])

    def e(x):
        traces.append(1)
        return rosenbrock(x)

    x = jnp.linspace(0, 1, 20)
    for build, call in [(lambda: sa.sparse_jacobian(f, x), lambda d: d.values(x)),
                        (lambda: sa.sparse_hessian(e, x), lambda d: d.lower_values(x))]:
        first = build()
        assert compilations(lambda call=call, first=first: call(first)) >= 1
        n0 = len(traces)
        again = build()  # a new object for the same function: same setup, same executable
        assert compilations(lambda call=call, again=again: call(again)) == 0
        assert len(traces) == n0
        np.testing.assert_array_equal(call(again), call(first))
    # opting out pays detection and compilation again
    sa.set_cache_size(0)
    n0 = len(traces)
    jac = sa.sparse_jacobian(f, x)
    assert compilations(lambda: jac.values(x)) >= 1 and len(traces) > n0


def test_cache_does_not_keep_functions_alive(fresh_cache):
    import gc

    x = jnp.linspace(0, 1, 10)
    f = lambda z: z[1:] * z[:-1]  # noqa: E731
    e = lambda z: jnp.sum(z**4)  # noqa: E731
    jac = sa.sparse_jacobian(f, x)
    lag = sa.sparse_lagrangian_hessian(e, f, x)
    assert sa.cache_info()["size"] == 2
    np.testing.assert_allclose(jac.values(x), jac.values(x))
    del f, e
    gc.collect()
    assert sa.cache_info()["size"] == 2  # the objects hold their functions
    np.testing.assert_allclose(lag(x, 1.0, jnp.ones(9)), lag(x, 1.0, jnp.ones(9)))
    del jac, lag
    gc.collect()
    assert sa.cache_info()["size"] == 0


def test_one_compilation_per_quantity(fresh_cache):
    """Each derivative quantity is one XLA executable (index data are arguments)."""
    x = jnp.linspace(0.2, 1, 30)
    x2, ones, zeros = 2 * x, jnp.ones(29), jnp.zeros(29)  # (eager ops compile too)
    jac = sa.sparse_jacobian(arrow_residual, x, mode="bidirectional")
    assert compilations(lambda: jac.values(x)) == 1
    assert compilations(lambda: jac.values(x2)) == 0
    hess = sa.sparse_hessian(band4_energy, x, method="acyclic")
    assert compilations(lambda: hess.lower_values(x)) == 1
    lag = sa.sparse_lagrangian_hessian(band4_energy, lambda z: z[1:] ** 2 * z[:-1], x)
    assert compilations(lambda: lag(x, 1.0, ones)) == 1
    assert compilations(lambda: lag(x, 2.0, zeros)) == 0


def test_building_from_a_pattern_compiles_nothing(fresh_cache):
    """Setup is host work: the index arrays are placed with device_put, not jnp.asarray (which
    compiles a `stage` executable per array shape on JAX 0.10)."""
    n = 37  # shapes no other test uses: nothing is in JAX's in-memory cache yet
    x = jnp.linspace(0.1, 1.0, n)
    p = sa.SparsityPattern.from_dense(np.eye(n - 1, n) + np.eye(n - 1, n, k=1))
    assert compilations(lambda: sa.sparse_jacobian(rosenbrock_res, x, pattern=p)) == 0
    ph = sa.SparsityPattern.from_dense(np.eye(n) + np.eye(n, k=1) + np.eye(n, k=-1))
    assert compilations(lambda: sa.sparse_hessian(rosenbrock, x, pattern=ph)) == 0


def test_mode_check_and_call_share_one_trace_of_the_products(fresh_cache):
    """The 'auto' HVP-mode (and Jacobian-direction) check traces the products a call runs,
    and the call's compilation reuses that trace instead of tracing f again."""
    x = jnp.linspace(0.1, 1.0, 12)
    e, traces = helpers.counting(rosenbrock)
    ph = sa.SparsityPattern.from_dense(np.eye(12) + np.eye(12, k=1) + np.eye(12, k=-1))
    hess = sa.sparse_hessian(e, x, pattern=ph)
    built = len(traces)  # the output shape (1) and the mode check (1)
    assert built == 2 and hess.mode == "fwd_over_rev"
    np.testing.assert_allclose(hess.todense(x), hessian(rosenbrock)(x), **TOL)
    np.testing.assert_allclose(hess.lower_values(x), hess.values(x)[hess._lower_pos], **TOL)
    assert len(traces) == built
    r, rtraces = helpers.counting(rosenbrock_res)
    p = sa.SparsityPattern.from_dense(np.eye(11, 12) + np.eye(11, 12, k=1))
    jac = sa.sparse_jacobian(r, x, pattern=p)
    built = len(rtraces)
    np.testing.assert_allclose(jac.todense(x), jacfwd(rosenbrock_res)(x), **TOL)
    assert len(rtraces) == built


def test_seeds_passed_as_arguments_beyond_the_constant_size(fresh_cache, monkeypatch):
    """Seed matrices too big to be constants are made once on the host and passed to the
    call (building them from the colours in the graph cost a pass per call); the values are
    exactly those of the dense derivatives, in both directions and for Hessians."""
    import sparseopt_adapters._compressed as compressed

    monkeypatch.setattr(compressed, "_CONST_SEEDS_MAX", 0)
    x = jnp.linspace(0.2, 1.0, 30)
    jac = sa.sparse_jacobian(arrow_residual, x, mode="bidirectional")
    assert jac.jvp_count and jac.vjp_count
    index = jac._static.numpy
    assert index["col_seeds"].shape == (jac.jvp_count, 30)
    assert index["row_seeds"].shape == (jac.vjp_count, jac.shape[0])
    np.testing.assert_allclose(jac.todense(x), jacfwd(arrow_residual)(x), **TOL)
    hess = sa.sparse_hessian(band4_energy, x)
    assert hess._static.numpy["col_seeds"].shape == (hess.n_colors, 30)
    np.testing.assert_allclose(hess.todense(x), hessian(band4_energy)(x), **TOL)
    chunked = sa.sparse_hessian(band4_energy, x, chunk_size=2)  # bounded memory: in the graph
    assert "col_seeds" not in chunked._static.numpy
    np.testing.assert_allclose(chunked.todense(x), hessian(band4_energy)(x), **TOL)


# -- integer arguments are index data (issue 13) --------------------------------------------
def test_other_index_data_raises_instead_of_a_wrong_jacobian(fresh_cache):
    x = jnp.linspace(0.1, 1, 8)
    idx = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    other = jnp.array([3, 2, 1, 0, 3, 2, 1, 0])
    jac = sa.sparse_jacobian(segment_residual, x, idx, 2)
    np.testing.assert_allclose(jac.todense(x, idx, 2), jacfwd(segment_residual)(x, idx, 2),
                               **TOL)
    np.testing.assert_allclose(jac.todense(x, np.asarray(idx), 2),  # same values, numpy
                               jacfwd(segment_residual)(x, idx, 2), **TOL)
    with pytest.raises(ValueError, match=r"args\[1\].*other integer.*args\[1\]\[0\] is 3, was 0"
                       r".*Build the derivative again"):
        jac(x, other, 2)
    with pytest.raises(ValueError, match=r"args\[2\] .*3, was 2"):
        jac.values(x, idx, 3)
    # closed over under jit: a constant, checked when traced
    np.testing.assert_allclose(jax.jit(lambda z: jac.values(z, idx, 2))(x), jac.values(x, idx, 2))
    with pytest.raises(ValueError, match=r"args\[1\]"):
        jax.jit(lambda z: jac.values(z, other, 2))(x)
    # traced under jit: checked in the graph at run time
    jitted = jax.jit(jac.values)
    np.testing.assert_allclose(jitted(x, idx, 2), jac.values(x, idx, 2), **TOL)
    with pytest.raises(Exception, match=r"args\[1\] holds other integer"):
        jax.block_until_ready(jitted(x, other, 2))
    # built under jit with traced index data: a pattern valid for every value
    build = jax.jit(lambda z, i: sa.sparse_jacobian(segment_residual, z, i, 2).todense(z, i, 2))
    np.testing.assert_allclose(build(x, other), jacfwd(segment_residual)(x, other, 2), **TOL)
    # a pattern passed in is trusted for every value
    p = jax.jit(lambda z, i: sa.jacobian_sparsity(segment_residual, z, i, 2).todense().sum())
    assert int(p(x, idx)) == 32


def test_other_index_data_raises_for_hessians(fresh_cache):
    x = jnp.linspace(0.1, 1, 8)
    idx = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    other = jnp.array([3, 2, 1, 0, 3, 2, 1, 0])

    def e(z, i):
        return jnp.sum(jax.ops.segment_sum(z, i, num_segments=4) ** 2)

    hess = sa.sparse_hessian(e, x, idx)
    np.testing.assert_allclose(hess.todense(x, idx), hessian(e)(x, idx), **TOL)
    with pytest.raises(ValueError, match=r"sparse_hessian: args\[1\]"):
        hess.lower_values(x, other)
    lag = sa.sparse_lagrangian_hessian(e, lambda z, i: z[i] ** 2, x, idx)
    lag(x, 1.0, jnp.ones(8), idx)
    with pytest.raises(ValueError, match=r"sparse_lagrangian_hessian: args\[3\]"):
        lag(x, 1.0, jnp.ones(8), other)


def test_index_hash_is_the_same_in_numpy_and_jax():
    from sparseopt_adapters._compressed import _int_hash

    rng = np.random.default_rng(0)
    values = [rng.integers(-2**40, 2**40, 50), rng.integers(-100, 100, (3, 4)).astype(np.int32),
              rng.integers(0, 2, 7).astype(bool), np.array(5), np.arange(6, dtype=np.uint8),
              rng.integers(-100, 100, 9).astype(np.int16), rng.integers(-9, 9, 5).astype(np.int8),
              rng.integers(0, 2**32, 9).astype(np.uint32)]
    for v in values:
        want = int(_int_hash(v, np))
        assert int(jax.jit(lambda a: _int_hash(a, jnp))(jnp.asarray(v))) == want, v.dtype
    a = np.arange(1000)
    b = a.copy()
    b[[3, 700]] = b[[700, 3]]  # a swap changes the hash
    assert _int_hash(a, np) != _int_hash(b, np)
    assert _int_hash(a, np) != _int_hash(a + 2**32, np)  # the high word counts


# -- another shape (issue 13) ----------------------------------------------------------------------
def test_other_shape_names_the_shape_it_was_built_for(fresh_cache):
    x = jnp.linspace(0.1, 1, 12)
    jac = sa.sparse_jacobian(residual, x)
    with pytest.raises(ValueError, match=r"args\[0\] has shape \(13,\).*built for shape \(12,\)"):
        jac(jnp.ones(13))
    with pytest.raises(ValueError, match=r"built for shape \(12,\)"):
        jax.jit(jac.values)(jnp.ones(13))
    hess = sa.sparse_hessian(rosenbrock, x)
    with pytest.raises(ValueError, match=r"sparse_hessian: args\[0\].*\(12,\)"):
        hess.lower_values(jnp.ones((3, 4)))
    with pytest.raises(TypeError, match=r"args\[0\] has the structure"):
        jac.values((x,))
    # vmap sees the unbatched shape
    assert jax.vmap(jac.values)(jnp.stack([x, x])).shape == (2, jac.nnz)


# -- HVP modes (issue 14 item 6) -----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["fwd_over_rev", "rev_over_fwd", "rev_over_rev", "auto"])
@pytest.mark.parametrize("method", ["star", "acyclic"])
def test_hvp_modes_equal_jax_hessian(mode, method):
    x = jnp.linspace(-0.7, 1.3, 15)
    for f in (rosenbrock, band4_energy, arrow_energy):
        hess = sa.sparse_hessian(f, x, mode=mode, method=method, chunk_size=2)
        assert hess.mode == ("fwd_over_rev" if mode == "auto" else mode)
        np.testing.assert_allclose(hess.todense(x), hessian(f)(x), **TOL)
        lower = hessian(f)(x)[hess.lower_pattern.rows, hess.lower_pattern.cols]
        np.testing.assert_allclose(hess.lower_values(x), lower, **TOL)


@pytest.mark.parametrize("mode", ["fwd_over_rev", "rev_over_fwd", "rev_over_rev", "auto"])
def test_lagrangian_hvp_modes_equal_jax_hessian(mode):
    x = jnp.linspace(-0.7, 1.3, 9)
    c = lambda z: jnp.stack([z[1:] ** 2 * z[:-1], jnp.sin(z[1:])])  # noqa: E731
    lag = sa.sparse_lagrangian_hessian(band4_energy, c, x, mode=mode)
    lam = jnp.linspace(-1, 1, 16)
    ref = hessian(lambda z: 0.5 * band4_energy(z) + jnp.dot(lam, c(z).ravel()))(x)
    lp = lag.lower_pattern
    np.testing.assert_allclose(lag(x, 0.5, lam), ref[lp.rows, lp.cols], **TOL)


def test_auto_hvp_mode_falls_back_for_custom_vjp():
    @jax.custom_vjp
    def energy(x):
        return jnp.sum(x[1:] ** 3 * x[:-1])

    def fwd(x):
        return energy(x), x

    def bwd(x, g):
        d = jnp.zeros_like(x).at[1:].add(3 * x[1:] ** 2 * x[:-1]).at[:-1].add(x[1:] ** 3)
        return (g * d,)

    energy.defvjp(fwd, bwd)
    x = jnp.linspace(0.5, 1.5, 10)
    p = sa.SparsityPattern.from_dense(np.eye(10) + np.eye(10, k=1) + np.eye(10, k=-1))
    hess = sa.sparse_hessian(energy, x, pattern=p)
    assert hess.mode == "rev_over_rev"
    ref = jax.jit(jax.jacrev(jax.grad(energy)))(x)
    np.testing.assert_allclose(hess.todense(x), ref, **TOL)
    assert sa.check_hessian(hess, x).passed
    with pytest.raises(ValueError, match="mode must be 'auto' or one of"):
        sa.sparse_hessian(energy, x, pattern=p, mode="forward")


def test_no_large_constants_are_baked_into_the_call(fresh_cache):
    """Index data are arguments of the derivative's own compiled call; only small seed
    matrices are constants. (Under a user's outer jax.jit, JAX 0.10 embeds every concrete
    array the trace sees, ours included, as a constant.)"""
    n = 60_000
    x = jax.ShapeDtypeStruct((n,), jnp.float64)
    f = lambda z: z[2:-2] ** 3 - 0.5 * z[1:-3] - 0.5 * z[3:-1] + 0.1 * z[:-4] * z[4:]  # noqa: E731
    jac = sa.sparse_jacobian(f, x)
    assert jac.n_colors * n > (1 << 17)  # too big to bake: seeds come from the colours
    hlo = jac._values_jit.lower(jac._static.get(), x).as_text()
    assert len(hlo) < 50_000, len(hlo)  # the (nnz,) gather index alone would print ~2.4 MB
    hess = sa.sparse_hessian(lambda z: jnp.sum(f(z) ** 2), x)
    hlo = hess._lower_jit.lower(hess._static.get(), x).as_text()
    assert len(hlo) < 50_000, len(hlo)
