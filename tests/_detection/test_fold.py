"""Tests for sparseopt_adapters._detection._fold: numpy gather/scatter against JAX's own.

Detection folds constants and moves element ids through gathers and scatters in numpy
(no XLA compilation); these check the numpy versions give JAX's results, bit for bit, on
the index forms JAX produces (every mode, batching dimensions from vmap, window slices).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sparseopt_adapters._detection import _compat
from sparseopt_adapters._detection._common import bind_eqn
from sparseopt_adapters._detection._fold import NUMPY_IMPL, scatter_destination
from sparseopt_adapters._detection.rules.elementwise import (
    _ZERO_TO_NONZERO,
    _ZERO_TO_ZERO,
    _zero_image,
)

X = np.arange(1.0, 1.0 + 5 * 7 * 3).reshape(5, 7, 3)
I1 = np.array([4, 0, 2, 2, 6], np.int32)
I_OOB = np.array([-9, 1, 7, 3, 12], np.int32)

GATHERS = {
    "take": lambda x: x[I1 % 5],
    "take_2d_index": lambda x: x[np.array([[0, 4], [3, 3]])],
    "axis1": lambda x: x[:, I1],
    "two_arrays": lambda x: x[np.array([0, 4, 1]), np.array([6, 0, 2])],
    "with_slice": lambda x: x[np.array([1, 3]), 2:5],
    "fill_nan": lambda x: x.at[:, I_OOB].get(mode="fill"),
    "fill_value": lambda x: x.at[:, I_OOB].get(mode="fill", fill_value=-3.0),
    "clip": lambda x: x.at[I_OOB].get(mode="clip"),
    "negative": lambda x: x[np.array([-1, -5, 2])],
    "take_along": lambda x: jnp.take_along_axis(x, np.ones((5, 2, 3), np.int32) * 6, axis=1),
    "vmap": lambda x: jax.vmap(lambda a, i: a[i])(x, np.array([1, 0, 6, 6, 2])),
    "vmap_fill": lambda x: jax.vmap(lambda a, i: a.at[i].get(mode="fill"))(x, I_OOB),
    "split_index": lambda x: x[np.array([[1, 2], [3, 4]]), :, np.array([[0, 2], [1, 1]])],
}

SCATTERS = {
    "add": lambda x, u: x.at[I1 % 5].add(u[:105].reshape(5, 7, 3)),
    "set_axis1": lambda x, u: x.at[:, I1].set(u[:5 * 5 * 3].reshape(5, 5, 3)),
    "two_arrays": lambda x, u: x.at[np.array([0, 4]), np.array([6, 0])].add(u[:6].reshape(2, 3)),
    "drop": lambda x, u: x.at[:, I_OOB].add(u[:75].reshape(5, 5, 3), mode="drop"),
    "clip": lambda x, u: x.at[I_OOB].set(u[:5 * 7 * 3].reshape(5, 7, 3), mode="clip"),
    "vmap": lambda x, u: jax.vmap(lambda a, i, v: a.at[i].add(v))(
        x, np.array([1, 0, 6, 6, 2]), u[:15].reshape(5, 3)),
    "vmap_drop": lambda x, u: jax.vmap(lambda a, i, v: a.at[i].set(v, mode="drop"))(
        x, I_OOB, u[:15].reshape(5, 3)),
}


def _each_eqn(fn, *args, prefix):
    """``(eqn, concrete inputs)`` for every equation of ``fn``'s jaxpr (inner jits
    included) named ``prefix*``."""
    closed = jax.make_jaxpr(fn)(*args)
    found = []
    _walk(closed.jaxpr, closed.consts, args, prefix, found)
    assert found, closed
    return found


def _walk(jaxpr, consts, args, prefix, found):
    env = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for e in jaxpr.eqns:
        ins = [_compat.literal_value(v) if _compat.is_literal(v) else env[v] for v in e.invars]
        if e.primitive.name.startswith(prefix):
            found.append((e, ins))
        if "jaxpr" in e.params and hasattr(e.params["jaxpr"], "jaxpr"):
            inner = e.params["jaxpr"]
            _walk(inner.jaxpr, inner.consts, ins, prefix, found)
        for v, o in zip(e.outvars, bind_eqn(e, *ins), strict=True):
            env[v] = o
    return [env[v] for v in jaxpr.outvars]


@pytest.mark.parametrize("case", sorted(GATHERS))
def test_numpy_gather_matches_lax(case):
    for e, ins in _each_eqn(GATHERS[case], X, prefix="gather"):
        ours = NUMPY_IMPL["gather"](*[np.asarray(a) for a in ins], **e.params)
        theirs = np.asarray(bind_eqn(e, *ins)[0])
        np.testing.assert_array_equal(ours, theirs)
        assert ours.shape == tuple(e.outvars[0].aval.shape)


@pytest.mark.parametrize("case", sorted(SCATTERS))
def test_numpy_scatter_destination_matches_jax_transpose(case):
    u = np.arange(1.0, 200.0)
    for e, ins in _each_eqn(SCATTERS[case], X, u, prefix="scatter"):
        operand, indices, updates = (np.asarray(a) for a in ins[:3])
        dn, mode = e.params["dimension_numbers"], e.params["mode"]
        ours = scatter_destination(operand.shape, indices, updates.shape, dn, mode)

        def scat(v, operand=operand, indices=indices, dn=dn, mode=mode):
            return lax.scatter_add(jnp.zeros(operand.shape), indices, v, dn, mode=mode)

        ids = np.arange(1.0, operand.size + 1).reshape(operand.shape)
        (dest,) = jax.linear_transpose(scat, jax.ShapeDtypeStruct(updates.shape,
                                                                  np.float64))(ids)
        theirs = np.rint(np.asarray(dest).reshape(-1)).astype(np.int64) - 1
        np.testing.assert_array_equal(ours, theirs)


def test_zero_image_table_matches_jax():
    """The table that spares detection a compile per elementwise primitive agrees with
    running the primitive on zeros."""
    x = jnp.float64(0.0)
    fns = {"neg": lax.neg, "sin": jnp.sin, "tan": jnp.tan, "asin": jnp.arcsin,
           "atan": jnp.arctan, "sinh": jnp.sinh, "tanh": jnp.tanh, "asinh": jnp.arcsinh,
           "atanh": jnp.arctanh, "sqrt": jnp.sqrt, "cbrt": jnp.cbrt, "abs": jnp.abs,
           "square": jnp.square, "erf": jax.scipy.special.erf,
           "erf_inv": jax.scipy.special.erfinv, "add": lambda a: a + a,
           "sub": lambda a: a - a, "max": lambda a: jnp.maximum(a, a),
           "min": lambda a: jnp.minimum(a, a), "expm1": jnp.expm1, "log1p": jnp.log1p,
           "atan2": lambda a: jnp.arctan2(a, a), "clamp": lambda a: lax.clamp(a, a, a),
           "nextafter": lambda a: jnp.nextafter(a, a), "cos": jnp.cos, "cosh": jnp.cosh,
           "exp": jnp.exp, "exp2": jnp.exp2, "log": jnp.log,
           "logistic": jax.nn.sigmoid, "erfc": jax.scipy.special.erfc,
           "rsqrt": lax.rsqrt, "acos": jnp.arccos, "pow": lambda a: lax.pow(a, a),
           "integer_pow": lambda a: lax.integer_pow(a, 3),
           "integer_pow0": lambda a: lax.integer_pow(a, 0)}
    checked = set()
    for name, fn in fns.items():
        closed = jax.make_jaxpr(fn)(x)
        (e,) = [e for e in closed.jaxpr.eqns if e.primitive.name == name.rstrip("0")]
        from sparseopt_adapters._detection import _abstract as ab

        ins = [ab.known(np.zeros((), np.float64)) for _ in e.invars]
        expected = bool(np.asarray(bind_eqn(e, *[np.zeros(()) for _ in e.invars])[0]) != 0)
        assert _zero_image(e, ins) == expected, name
        checked.add(name.rstrip("0"))
    missing = (_ZERO_TO_ZERO | _ZERO_TO_NONZERO) - checked
    assert missing <= {"real", "imag", "conj", "copy", "copy_p", "reduce_precision",
                       "convert_element_type", "add_any", "complex", "sign"}, missing
