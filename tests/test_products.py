"""Seeds and batched products (_products.py) against dense JAX autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseopt_adapters as sa  # noqa: F401  (float64)
from sparseopt_adapters._products import HVP_MODES, hvps, jvps, map_seeds, seeds, vjps

TOL = dict(rtol=1e-12, atol=1e-13)


def g(z):
    return jnp.stack([jnp.sum(z[1:] ** 2 * z[:-1]), jnp.sin(z[0]) * z[-1], jnp.prod(z[:3])])


def test_seeds_from_colors():
    s = seeds(jnp.array([0, 1, -1, 0, 2]), 3, jnp.float64)
    np.testing.assert_array_equal(s, [[1, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 1]])


@pytest.mark.parametrize("chunk", [None, 1, 2, 5, 10])
def test_jvps_vjps_equal_jacobian_products(chunk):
    x = jnp.linspace(0.3, 1.2, 7)
    V = jnp.asarray(np.random.default_rng(0).normal(size=(5, 7)))
    U = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3)))
    J = jax.jacfwd(g)(x)
    np.testing.assert_allclose(jvps(g, x, V, chunk), V @ J.T, **TOL)
    np.testing.assert_allclose(vjps(g, x, U, chunk), U @ J, **TOL)


@pytest.mark.parametrize("mode", HVP_MODES)
@pytest.mark.parametrize("chunk", [None, 3])
def test_hvps_every_mode_equals_jax_hessian(mode, chunk):
    x = jnp.linspace(0.3, 1.2, 7)
    V = jnp.asarray(np.random.default_rng(0).normal(size=(5, 7)))
    H = jax.hessian(lambda z: g(z)[0])(x)
    np.testing.assert_allclose(jax.jit(lambda z: hvps(g, z, V, mode, chunk))(x), V @ H, **TOL)


def test_mapper_is_used():
    calls = []

    def mapper(fun, s, chunk):
        calls.append(s.shape)
        return jax.vmap(fun)(s)

    out = map_seeds(lambda s: 2 * s, jnp.ones((3, 4)), None, mapper)
    assert calls == [(3, 4)] and out.shape == (3, 4)


def test_unknown_hvp_mode():
    with pytest.raises(ValueError, match="HVP mode must be one of"):
        hvps(g, jnp.ones(4), jnp.ones((1, 4)), "fwd_over_fwd")


def test_sharding_imports_products_not_compressed():
    import ast
    import pathlib

    import sparseopt_adapters._sharding as sh

    tree = ast.parse(pathlib.Path(sh.__file__).read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "_compressed" not in mods and "_products" in mods
