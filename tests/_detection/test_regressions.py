"""The three crashes of issue 15 (an internal ``_NoAD`` error before), and JAX 0.12's scan."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import sparseopt_adapters as sa

X5 = jnp.arange(1.0, 6.0)


def _detect_quietly(f, x):
    with warnings.catch_warnings():
        warnings.simplefilter("error", sa.SparsityWarning)
        return sa.jacobian_sparsity(f, x)


def test_ldexp():
    p = _detect_quietly(lambda x: jnp.ldexp(x, jnp.array([1, 2, 3, 4, 5])), X5)
    assert (p.todense() == np.eye(5, dtype=bool)).all()


def test_custom_jvp_with_float0_tangent_output():
    @jax.custom_jvp
    def f(x):
        return jnp.sin(x), jnp.arange(x.shape[0])

    @f.defjvp
    def f_jvp(p, t):
        (x,), (dx,) = p, t
        return f(x), (jnp.cos(x) * dx, np.zeros((x.shape[0],), jax.dtypes.float0))

    # the integer output is known from the primal: indexing by it stays a permutation
    p = _detect_quietly(lambda x: f(x)[0] * x[f(x)[1][::-1]], X5)
    assert (p.todense() == (np.eye(5, dtype=bool) | np.fliplr(np.eye(5, dtype=bool)))).all()


def test_index_array_closed_over_in_a_custom_jvp_rule():
    perm = jnp.array([4, 0, 2, 1, 3])

    @jax.custom_jvp
    def g(x):
        return x[perm] * 2

    g.defjvp(lambda p, t: (g(p[0]), t[0][perm] * 2))
    p = _detect_quietly(g, X5)
    assert (p.todense() == np.eye(5, dtype=bool)[np.asarray(perm)]).all()


def test_scan_with_consts_reads_parameters_through_compat():
    # JAX 0.12 replaced num_consts/num_carry by ft_in (KeyError: 'num_consts' before)
    def f(x):
        w = x[0]
        return lax.scan(lambda c, xi: (c * w + xi, c), 0.0, x[1:])[1]

    p = _detect_quietly(f, X5)
    assert p.shape == (4, 5)
    assert p.todense()[3].tolist() == [True, True, True, True, False]


def test_a_failing_rule_is_conservative_not_an_exception(monkeypatch):
    from sparseopt_adapters._detection import _registry

    def broken(interp, eqn, ins):
        raise RuntimeError("boom")

    monkeypatch.setitem(_registry.RULES, "sin", broken)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        p = sa.jacobian_sparsity(lambda x: jnp.sin(x), X5)
    assert p.nnz == 25
    assert any("internal error in its rule" in str(m.message) for m in w)


def test_gather_fill_value_is_a_constant_not_an_element_id():
    # Detection runs the gather on element ids; the fill (2.0) used to read as id 2, i.e.
    # element 1 of c (a structural zero), so 2.0 * x[2] was detected as zero: a missing entry.
    def f(x):
        c = jnp.zeros(3).at[0].set(x[0])
        g = c.at[jnp.array([0, 5])].get(mode="fill", fill_value=2.0)
        return g * x[1:3]

    x = jnp.array([1.0, 2.0, 3.0])
    p = _detect_quietly(f, x)
    assert (p.todense() == (jax.jacfwd(f)(x) != 0)).all()
    # the default fill (NaN for floats) is not a zero either
    q = _detect_quietly(lambda x: jnp.zeros(3).at[0].set(x[0]).at[jnp.array([0, 5])].get(
        mode="fill") * x[1:3], x)
    assert q.todense()[1, 2]
