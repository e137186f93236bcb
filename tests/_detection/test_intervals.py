"""Integer intervals through index arithmetic (issue 15, item 4): data-dependent but bounded
indices give the union of the reachable windows, not "anywhere". Each expected pattern is
written out by hand; before intervals every one of these was all-to-all."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import sparseopt_adapters as sa
from sparseopt_adapters._detection import _abstract as ab
from sparseopt_adapters._detection import _intervals as iv

X8 = jnp.arange(1.0, 9.0)


def _pattern(rows, n_cols):
    m = np.zeros((len(rows), n_cols), bool)
    for r, cols in enumerate(rows):
        m[r, list(cols)] = True
    return m


def test_dynamic_slice_at_argmax_is_the_union_of_three_windows():
    f = lambda x: lax.dynamic_slice(x, (jnp.argmax(x[:3]),), (3,))
    p = sa.jacobian_sparsity(f, X8)
    assert (p.todense() == _pattern([{0, 1, 2}, {1, 2, 3}, {2, 3, 4}], 8)).all()


def test_argmax_floor_half_keeps_its_relation():
    # argmax(x[:4]) // 2 in {0, 1}: jnp's floor_divide sign correction must not widen it
    f = lambda x: lax.dynamic_slice(x, (jnp.argmax(x[:4]) // 2,), (3,))
    p = sa.jacobian_sparsity(f, X8)
    assert (p.todense() == _pattern([{0, 1}, {1, 2}, {2, 3}], 8)).all()


def test_clamped_cast_index():
    f = lambda x: lax.dynamic_slice(x, (jnp.clip(x[0].astype(int), 0, 2),), (2,)) + 0.0
    p = sa.jacobian_sparsity(f, X8)
    assert (p.todense() == _pattern([{0, 1, 2}, {1, 2, 3}], 8)).all()


def test_plain_indexing_by_argmax_drops_negative_index_normalisation():
    f = lambda x: x[jnp.argmax(x[2:5]) + 2] * jnp.ones(1)
    p = sa.jacobian_sparsity(f, X8)
    assert (p.todense() == _pattern([{2, 3, 4}], 8)).all()


def test_dynamic_update_slice_at_argmin():
    f = lambda x: lax.dynamic_update_slice(x, x[:2] ** 2, (jnp.argmin(x[:3]) + 4,))
    d = sa.jacobian_sparsity(f, X8).todense()
    for i in range(4):
        assert (d[i] == np.eye(8, dtype=bool)[i]).all()
    # rows 4..7 may be overwritten by x[0]**2 or x[1]**2, or keep their own entry
    assert set(np.nonzero(d[4])[0]) == {0, 4}
    assert set(np.nonzero(d[5])[0]) == {0, 1, 5}
    assert set(np.nonzero(d[6])[0]) == {0, 1, 6}
    assert set(np.nonzero(d[7])[0]) == {1, 7}


def test_gather_and_scatter_with_bounded_indices():
    g = sa.jacobian_sparsity(lambda x: x[jnp.array([jnp.argmax(x[:3]), 5])], X8).todense()
    assert (g == _pattern([{0, 1, 2}, {5}], 8)).all()
    s = sa.jacobian_sparsity(lambda x: jnp.zeros(8).at[jnp.argmax(x[:3])].set(x[7]), X8)
    assert (s.todense() == _pattern([{7}, {7}, {7}, (), (), (), (), ()], 8)).all()


def test_switch_on_a_bounded_index_runs_only_the_reachable_branches():
    f = lambda x: lax.switch(jnp.clip(x[0].astype(int), 0, 1),
                             [lambda y: y * 2, lambda y: y[::-1], lambda y: jnp.exp(y[:1]) * y],
                             x[:4])
    d = sa.jacobian_sparsity(f, X8).todense()
    expected = np.zeros((4, 8), bool)
    for i in range(4):
        expected[i, i] = expected[i, 3 - i] = True
    assert (d == expected).all()  # branch 2 (exp, touching x[0] everywhere) is unreachable


def test_unbounded_index_stays_conservative_and_sound():
    f = lambda x: lax.dynamic_slice(x, (x[0].astype(int),), (2,))
    assert sa.jacobian_sparsity(f, X8).todense().all()


def test_interval_arithmetic_unit():
    a = iv.bounded((3,), np.int32, [0, 1, 2], [4, 1, 5])
    b = ab.known(np.array([2, 2, -1], np.int32))
    out = iv.evaluate("mul", [a, b], (3,), np.int32)
    lo, hi = iv.bounds(out)
    assert lo.tolist() == [0, 2, -5] and hi.tolist() == [8, 2, -2]
    out = iv.evaluate("lt", [a, ab.known(np.int32(0))], (3,), np.bool_)
    assert out.known and not np.asarray(out.value).any()  # decided: never negative
    out = iv.evaluate("div", [a, ab.known(np.int32(2))], (3,), np.int32)
    assert iv.bounds(out)[1].tolist() == [2, 0, 2]


def test_interval_budget_falls_back_soundly():
    # 300 reachable starts exceed the case budget: every element may be read
    f = lambda x: lax.dynamic_slice(x, (jnp.argmax(x),), (1,))
    p = sa.jacobian_sparsity(f, jax.ShapeDtypeStruct((300,), jnp.float64))
    assert p.nnz == 300
