"""Tests for sparseopt_adapters._parametrization: PatternMatrix and ravel_parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from jax.experimental import sparse as jsparse

import sparseopt_adapters as sa


def random_pattern(rng, m, n, per_row=2):
    rows, cols = [], []
    for i in range(m):
        c = rng.choice(n, size=min(per_row, n), replace=False)
        rows += [i] * len(c)
        cols += list(c)
    return np.array(rows), np.array(cols)


def random_pattern_matrix(rng, m, n, per_row=2, shuffle=True):
    r, c = random_pattern(rng, m, n, per_row)
    if shuffle:
        perm = rng.permutation(r.size)
        r, c = r[perm], c[perm]
    v = rng.standard_normal(r.size)
    return sa.PatternMatrix(v, r, c, (m, n)), r, c, v


def dense_of(r, c, v, shape):
    a = np.zeros(shape)
    a[r, c] = v
    return a


# -- construction and products ------------------------------------------------------------


def test_construct_reorders_to_row_major(rng):
    G, r, c, v = random_pattern_matrix(rng, 7, 5)
    assert G.shape == (7, 5) and G.nnz == r.size
    key = G.rows * 5 + G.cols
    assert np.all(np.diff(key) > 0)
    np.testing.assert_array_equal(np.asarray(G.todense()), dense_of(r, c, v, (7, 5)))
    assert "PatternMatrix(7×5" in repr(G)
    assert jax.tree.leaves(G) == [G.values]


def test_dense_products(rng):
    G, r, c, v = random_pattern_matrix(rng, 7, 5)
    A = dense_of(r, c, v, (7, 5))
    x, X = rng.standard_normal(5), rng.standard_normal((5, 3))
    y, Y = rng.standard_normal(7), rng.standard_normal((4, 7))
    np.testing.assert_allclose(G @ x, A @ x, rtol=1e-13)
    np.testing.assert_allclose(G @ X, A @ X, rtol=1e-13)
    np.testing.assert_allclose(y @ G, y @ A, rtol=1e-13)
    np.testing.assert_allclose(Y @ G, Y @ A, rtol=1e-13)
    np.testing.assert_allclose(jnp.asarray(Y) @ G, Y @ A, rtol=1e-13)
    np.testing.assert_allclose(G.T @ y, A.T @ y, rtol=1e-13)
    np.testing.assert_array_equal(np.asarray(G.T.todense()), A.T)
    with pytest.raises(ValueError, match=r"must have shape \(5,\) or \(5, k\)"):
        G @ np.ones(4)


def test_sparse_products_and_sums(rng):
    G, r, c, v = random_pattern_matrix(rng, 7, 5)
    A = dense_of(r, c, v, (7, 5))
    Ls = sp.random_array((7, 7), density=0.3, random_state=1, format="csr") + sp.eye_array(7)
    L = Ls.toarray()
    GtLG = G.T @ Ls @ G
    assert isinstance(GtLG, sa.PatternMatrix) and GtLG.shape == (5, 5)
    np.testing.assert_allclose(GtLG.todense(), A.T @ L @ A, rtol=1e-12, atol=1e-13)
    # scipy on the left defers to PatternMatrix
    LG = Ls @ G
    assert isinstance(LG, sa.PatternMatrix)
    np.testing.assert_allclose(LG.todense(), L @ A, rtol=1e-12, atol=1e-13)
    # BCOO and PatternMatrix operands
    Lb = jsparse.BCOO.fromdense(L)
    np.testing.assert_allclose((G.T @ Lb).todense(), A.T @ L, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(
        (sa.PatternMatrix.from_bcoo(Lb) @ G).todense(), L @ A, rtol=1e-12, atol=1e-13
    )
    H, rh, ch, vh = random_pattern_matrix(rng, 7, 5)
    B = dense_of(rh, ch, vh, (7, 5))
    np.testing.assert_allclose((G + H).todense(), A + B, rtol=1e-13)
    np.testing.assert_allclose((G - H).todense(), A - B, rtol=1e-13)
    np.testing.assert_allclose((2.0 * G / 4.0 - G).todense(), -0.5 * A, rtol=1e-13)
    with pytest.raises(ValueError, match="mismatched shapes"):
        G @ G


def test_conversions(rng):
    G, r, c, v = random_pattern_matrix(rng, 6, 4)
    S = G.to_scipy("coo")
    G2 = sa.PatternMatrix.from_scipy(S)
    assert G2.pattern == G.pattern
    np.testing.assert_array_equal(np.asarray(G2.values), np.asarray(G.values))
    B = G.to_bcoo()
    G3 = sa.PatternMatrix.from_bcoo(B)
    assert G3.pattern == G.pattern
    np.testing.assert_array_equal(np.asarray(B.todense()), np.asarray(G.todense()))
    G4 = sa.PatternMatrix.from_dense(np.asarray(G.todense()))
    assert G4.pattern == G.pattern


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"duplicate entries: \(i, j\) = \(1, 2\).*sum_duplicates"):
        sa.PatternMatrix(np.ones(3), [0, 1, 1], [0, 2, 2], (3, 3))
    with pytest.raises(ValueError, match=r"column index out of range.*\(1, 3\).*\[0, 2\]"):
        sa.PatternMatrix(np.ones(2), [0, 1], [0, 3], (3, 3))
    with pytest.raises(ValueError, match=r"row index out of range.*\(-1, 0\)"):
        sa.PatternMatrix(np.ones(2), [-1, 1], [0, 1], (3, 3))
    with pytest.raises(ValueError, match=r"one value per pattern entry, shape \(2,\); got shape"):
        sa.PatternMatrix(np.ones(3), [0, 1], [0, 1], (3, 3))
    dup = sp.coo_array((np.ones(2), ([0, 0], [1, 1])), shape=(2, 2))
    with pytest.raises(ValueError, match="duplicate"):
        sa.PatternMatrix.from_scipy(dup)
    bdup = jsparse.BCOO((jnp.ones(2), jnp.array([[0, 1], [0, 1]])), shape=(2, 2))
    with pytest.raises(ValueError, match=r"b.sum_duplicates\(\)"):
        sa.PatternMatrix.from_bcoo(bdup)
    with pytest.raises(TypeError, match="must be concrete"):
        jax.jit(lambda i: sa.PatternMatrix(jnp.ones(2), i, i, (3, 3)).values)(jnp.arange(2))


def test_traced_values_in_jit_vmap_grad(rng):
    r, c = np.array([0, 2, 1]), np.array([1, 0, 1])
    x = rng.standard_normal(2)

    def f(v):
        return jnp.sum((sa.PatternMatrix(v, r, c, (3, 2)) @ x) ** 2)

    v = rng.standard_normal(3)
    A = dense_of(r, c, v, (3, 2))
    expected = np.sum((A @ x) ** 2)
    np.testing.assert_allclose(jax.jit(f)(v), expected, rtol=1e-13)
    np.testing.assert_allclose(jax.vmap(f)(np.stack([v, v])), [expected] * 2, rtol=1e-13)
    g = jax.grad(f)(v)
    # input order (0,1),(2,0),(1,1) -> d/dv of ||A x||^2 = 2 (A x)_i x_j
    ax = A @ x
    np.testing.assert_allclose(g, [2 * ax[0] * x[1], 2 * ax[2] * x[0], 2 * ax[1] * x[1]])


# -- the seed energy E(g) = ||X - Y G^T L G B||_F^2 ----------------------------------------


def local_pattern(p, q):
    """Prolongation-like: row i touches the two coarse columns nearest i * q / p."""
    base = np.minimum(np.arange(p) * q // p, q - 2)
    return np.repeat(np.arange(p), 2), np.stack([base, base + 1], axis=1).ravel()


def seed_problem(rng, p=13, q=7, n_y=5, n_b=4, selection=False, local=False):
    r, c = local_pattern(p, q) if local else random_pattern(rng, p, q, per_row=2)
    g = rng.standard_normal(r.size)
    Ls = sp.random_array((p, p), density=0.25, random_state=2, format="csr")
    if local:  # a banded, non-symmetric L
        Ls = sp.diags_array([1.0, -0.5, -0.3, 0.7], offsets=[-2, -1, 1, 3], shape=(p, p))
    Ls = Ls + 2 * sp.eye_array(p)
    if selection:
        Yi = np.sort(rng.choice(q, n_y, replace=False))
        Bi = np.sort(rng.choice(q, n_b, replace=False))
        Ys = sp.csr_array((np.ones(n_y), (np.arange(n_y), Yi)), shape=(n_y, q))
        Bs = sp.csr_array((np.ones(n_b), (Bi, np.arange(n_b))), shape=(q, n_b))
        Yd, Bd = Ys.toarray(), Bs.toarray()
    else:
        Ys = Yd = rng.standard_normal((n_y, q))
        Bs = Bd = rng.standard_normal((q, n_b))
    X = rng.standard_normal((n_y, n_b))

    def F(G):  # Y G^T L G B - X, never densifying G
        M = G.T @ Ls @ G
        YMB = (Ys @ M) @ Bs
        YMB = YMB.todense() if isinstance(YMB, sa.PatternMatrix) else YMB
        return YMB - X

    def E(g):
        return jnp.sum(F(sa.PatternMatrix(g, r, c, (p, q))) ** 2)

    def f(g):  # column-major vec(X - Y G^T L G B)
        # column-major vec; .T.ravel() rather than ravel(order="F"): the detector ignores
        # reshape(dimensions=...) (reported), and this test is about PatternMatrix
        return -F(sa.PatternMatrix(g, r, c, (p, q))).T.ravel()

    def E_G(G):
        return jnp.sum(F(G) ** 2)

    return dict(r=r, c=c, g=g, L=Ls.toarray(), Y=Yd, B=Bd, X=X, E=E, E_G=E_G, f=f, p=p, q=q)


def closed_forms(d):
    r, c, g, L, Y, B, X, p, q = (d[k] for k in "r c g L Y B X p q".split())
    G = dense_of(r, c, g, (p, q))
    F = Y @ G.T @ L @ G @ B - X
    dEdG = 2 * (L @ G @ B @ F.T @ Y + L.T @ G @ Y.T @ F @ B.T)
    grad = dEdG[r, c]
    K = np.zeros((p * q, p * q))
    for i in range(p):
        for j in range(q):
            K[j + i * q, i + j * p] = 1.0
    Pt = np.zeros((p * q, r.size))
    Pt[r + c * p, np.arange(r.size)] = 1.0
    jac = -(np.kron(B.T @ G.T @ L.T, Y) @ K + np.kron(B.T, Y @ G.T @ L)) @ Pt
    return grad, jac


@pytest.mark.parametrize("selection", [False, True], ids=["dense_YB", "selection_YB"])
def test_seed_energy_closed_forms(rng, selection):
    d = seed_problem(rng, selection=selection)
    grad, jac = closed_forms(d)
    g = d["g"]
    G = sa.PatternMatrix(g, d["r"], d["c"], (d["p"], d["q"]))
    perm = d["r"] * d["q"] + d["c"]  # closed forms are in input order; G is row-major
    order = np.argsort(perm)
    np.testing.assert_allclose(jax.grad(d["E"])(g), grad, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(jax.jacfwd(d["f"])(g), jac, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(jax.jacrev(d["f"])(g), jac, rtol=1e-10, atol=1e-10)
    # gradient with respect to the PatternMatrix itself: a PatternMatrix of dE/dg
    gG = jax.grad(d["E_G"])(G)
    np.testing.assert_allclose(gG.values, grad[order], rtol=1e-10, atol=1e-10)
    if selection:
        assert np.count_nonzero(jac) < jac.size // 2  # the sparse case really is sparse


def _all_avals(jaxpr):
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            yield v.aval
        for param in eqn.params.values():
            subs = param if isinstance(param, (list, tuple)) else [param]
            for s in subs:
                if isinstance(s, jax.extend.core.ClosedJaxpr):
                    yield from _all_avals(s.jaxpr)
                elif isinstance(s, jax.extend.core.Jaxpr):
                    yield from _all_avals(s)


@pytest.mark.parametrize("selection", [False, True], ids=["dense_YB", "selection_YB"])
def test_gradient_never_builds_dense_G(rng, selection):
    p, q = 300, 80
    d = seed_problem(rng, p=p, q=q, n_y=6, n_b=5, selection=selection, local=True)
    closed = jax.make_jaxpr(jax.grad(d["E"]))(d["g"])
    shapes = [tuple(a.shape) for a in _all_avals(closed.jaxpr) if hasattr(a, "shape")]
    assert shapes, "walked no equations"
    assert (p, q) not in shapes and (q, p) not in shapes
    biggest = max(int(np.prod(s)) for s in shapes)
    assert biggest < p * q // 4, f"largest intermediate has {biggest} entries (p*q = {p * q})"


# -- ravel / unravel ---------------------------------------------------------------------


def test_ravel_round_trip(rng):
    G, *_ = random_pattern_matrix(rng, 5, 4)
    tree = {
        "G": G,
        "w": jnp.asarray(rng.standard_normal((2, 3))),
        "s": 1.5,
        "f32": np.float32([1.25, -2.5]),
        "n": 3,
        "idx": np.arange(4),
        "L": sa.Fixed(np.eye(3)),
        "nested": [sa.Fixed(sa.PatternMatrix(np.ones(2), [0, 1], [1, 0], (2, 2))), None],
    }
    flat, unravel = sa.ravel_parameters(tree)
    assert flat.dtype == jnp.float64 and flat.shape == (G.nnz + 6 + 1 + 2,)
    back = unravel(flat)
    assert jax.tree.structure(
        back, is_leaf=lambda x: isinstance(x, sa.Fixed)
    ) == jax.tree.structure(tree, is_leaf=lambda x: isinstance(x, sa.Fixed))
    np.testing.assert_array_equal(back["G"].values, G.values)
    assert back["G"].pattern == G.pattern
    np.testing.assert_array_equal(back["w"], tree["w"])
    assert back["f32"].dtype == np.float32
    assert back["n"] == 3 and back["idx"] is tree["idx"] and back["L"] is tree["L"]
    # leaves in sorted-key order: G, f32, s, w; make the float32 slots float32-representable
    v = rng.standard_normal(flat.size)
    v[G.nnz : G.nnz + 2] = v[G.nnz : G.nnz + 2].astype(np.float32)
    v2 = jax.jit(lambda v: sa.ravel_parameters(unravel(v))[0])(jnp.asarray(v))
    np.testing.assert_array_equal(v2, v)
    un = sa.unwrap_fixed(back)
    assert isinstance(un["L"], np.ndarray) and isinstance(un["nested"][0], sa.PatternMatrix)
    with pytest.raises(ValueError, match=r"vector of shape \(\d+,\)"):
        unravel(flat[:-1])
    with pytest.raises(TypeError, match="complex"):
        sa.ravel_parameters({"z": jnp.ones(2, complex)})


@pytest.mark.parametrize("selection", [False, True], ids=["dense_YB", "selection_YB"])
def test_detection_through_pattern_matrix_is_exact(rng, selection):
    """jacobian_sparsity sees PatternMatrix products exactly: the structural pattern."""
    d = seed_problem(rng, p=40, q=12, n_y=5, n_b=4, selection=selection, local=True)
    g = rng.standard_normal(d["g"].size)  # generic values: no accidental zeros
    detected = sa.jacobian_sparsity(d["f"], g)
    dense = sa.SparsityPattern.from_dense(np.asarray(jax.jacfwd(d["f"])(g)) != 0)
    assert detected == dense, (detected, dense)
    if selection:
        assert detected.density < 0.5
