"""Sparse derivatives through the compiled colorings equal dense ``jax.jacfwd`` /
``jax.hessian`` in float64, on small versions of the benchmark problems (BRYBND-type
least squares, COPS torsion and steering) and for every mode and order."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseopt_adapters as sa
from sparseopt_adapters._coloring import ORDERS, _kernels


@pytest.fixture(params=["numba", "python"])
def backend(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(_kernels, "_COMPILED", False)
    else:
        if not _kernels._compiled():
            pytest.skip("numba is not importable")
        monkeypatch.setenv("SPARSEOPT_ADAPTERS_COLORING", "numba")
    return request.param


def brybnd_residual(x):
    """Broyden banded: f_i = x_i (2 + 5 x_i²) + 1 - sum_{j in [i-5, i+1], j != i} x_j (1 + x_j)."""
    n = x.shape[0]
    g = x * (1.0 + x)
    pad = jnp.pad(g, (5, 1))
    window = sum(pad[k:k + n] for k in range(7)) - g
    return x * (2.0 + 5.0 * x**2) + 1.0 - window


def brybnd(x):
    return jnp.sum(brybnd_residual(x) ** 2)


def torsion(v, nx=9, ny=7, c=5.0):
    """COPS torsion energy on an nx × ny grid (lower and upper triangle differences)."""
    u = v.reshape(ny, nx)
    dx = u[:, 1:] - u[:, :-1]
    dy = u[1:, :] - u[:-1, :]
    return 0.25 * (jnp.sum(dx**2) + jnp.sum(dy**2)) - c * jnp.sum(u) / (nx * ny) \
        + 0.1 * jnp.sum(u**4)


def steering(z, nh=12, a=100.0):
    """COPS steering collocation constraints with free final time (4 nh + 7 rows)."""
    n1 = nh + 1
    x = [z[k * n1:(k + 1) * n1] for k in range(4)]
    u = z[4 * n1:5 * n1]
    tf = z[5 * n1]
    h = tf / nh
    f = [x[2], x[3], a * jnp.cos(u), a * jnp.sin(u)]
    rows = [x[k][1:] - x[k][:-1] - 0.5 * h * (f[k][1:] + f[k][:-1]) for k in range(4)]
    rows.append(jnp.stack([x[0][0], x[1][0], x[2][0], x[3][0], x[1][-1] - 5.0, x[2][-1] - 45.0,
                           x[3][-1]]))
    return jnp.concatenate(rows)


def _x(n, seed):
    return jnp.asarray(np.random.default_rng(seed).uniform(0.5, 1.5, n))


@pytest.mark.parametrize("method", ["star", "acyclic", "auto"])
def test_hessians_match_jax(method, backend):
    for f, n in ((brybnd, 40), (torsion, 63)):
        x = _x(n, n)
        dense = np.asarray(jax.hessian(f)(x))
        for order in ("best", "natural", "smallest_last", "dsatur"):
            hess = sa.sparse_hessian(f, x, method=method, order=order)
            np.testing.assert_allclose(np.asarray(hess(x).todense()), dense, rtol=1e-12,
                                       atol=1e-12 * np.abs(dense).max())


@pytest.mark.parametrize("mode", ["forward", "reverse", "bidirectional", "auto"])
def test_jacobians_match_jax(mode, backend):
    for f, n in ((steering, 5 * 13 + 1), (brybnd_residual, 30)):
        x = _x(n, n)
        dense = np.asarray(jax.jacfwd(f)(x))
        for order in ("best",) + ORDERS:
            jac = sa.sparse_jacobian(f, x, mode=mode, order=order)
            # one product per entry: equal up to the rounding of the JVP/VJP itself
            np.testing.assert_allclose(np.asarray(jac(x).todense()), dense, rtol=1e-14,
                                       atol=1e-14 * np.abs(dense).max())


def test_benchmark_patterns_color_counts():
    """The small benchmark problems: the counts the compiled "best" must keep reaching."""
    x = _x(40, 0)
    assert sa.sparse_hessian(brybnd, x).n_colors == 7  # acyclic, the clique of 7 columns
    assert sa.sparse_hessian(brybnd, x, method="star").n_colors == 13
    assert sa.sparse_hessian(torsion, _x(63, 1), method="star").n_colors == 6  # as before
    assert sa.sparse_hessian(torsion, _x(63, 1), method="acyclic").n_colors == 4
    jac = sa.sparse_jacobian(steering, _x(66, 2))
    assert (jac.coloring.mode, jac.n_colors) == ("forward", 5)  # dense tf column: its own color


# -- compiled decompression builders against the numpy reference, array for array -----------
def _builder_cases():
    import test_coloring as T

    from .patterns import EXTRA_SYM
    from .test_kernels import SYM

    pats = list(SYM) + list(T.SYM_PATTERNS.values()) + list(EXTRA_SYM.values())
    for p in pats:
        p = p if p.is_symmetric() else p.symmetrize()
        for method in ("star", "acyclic"):
            for order in ("natural", "smallest_last", "random", "best"):
                yield p, method, sa.color_hessian(p, method=method, order=order,
                                                  warn=False).colors
        # acyclic colorings are often star colorings too: a second input per pattern
        yield p, "star", sa.color_hessian(p, method="acyclic", warn=False).colors


def _numpy_builder(p, method, colors):
    from sparseopt_adapters._coloring import _decompression as D

    raw = np.asarray(colors, np.int64)
    k = int(raw.max()) + 1 if raw.size else 0
    if method == "star":
        return D._star_numpy(p, raw, k)
    return D._acyclic_numpy(p, raw, k)


def _arrays(res):
    out = [res.column_colors, res.gather, res._labels, np.array([res.n_forward])]
    return out + (res.substitution.arrays() if res.substitution is not None else [])


def test_compiled_decompression_data_equals_the_numpy_reference(monkeypatch):
    """The numba builders (``star_gather``, ``acyclic_substitution``) give the numpy
    builders' arrays exactly: seeds, gather, and every substitution block."""
    if not _kernels._compiled():
        pytest.skip("numba is not importable")
    from sparseopt_adapters._coloring import _decompression as D

    n_cases = 0
    for p, method, colors in _builder_cases():
        try:
            _numpy_builder(p, method, colors)
        except ValueError:
            continue  # (a star input that is no star coloring: see the next test)
        monkeypatch.setenv("SPARSEOPT_ADAPTERS_COLORING", "numba")
        fast = D.BUILDERS[method](p, colors, "x")
        monkeypatch.setattr(_kernels, "_COMPILED", False)
        slow = D.BUILDERS[method](p, colors, "x")
        monkeypatch.undo()
        a, b = _arrays(fast), _arrays(slow)
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(x, y)
        n_cases += 1
    assert n_cases > 100


def test_compiled_builders_reject_what_the_numpy_ones_reject(monkeypatch):
    """Invalid colors: the same error (message included) from either builder."""
    if not _kernels._compiled():
        pytest.skip("numba is not importable")
    from sparseopt_adapters._coloring import _decompression as D

    from .patterns import banded, stencil

    cases = [
        (banded(12, 12, 2, 2), "star", np.arange(12) % 3),     # a path colored 0 1 2 0 ...
        (banded(12, 12, 2, 2), "acyclic", np.arange(12) % 2),  # adjacent, same color
        (stencil(4, 4), "acyclic", (np.arange(16) + np.arange(16) // 4) % 2),  # 4-cycles
        (banded(5, 5, 1, 0), "star", np.arange(5)),  # not symmetric
        (banded(5, 5, 1, 0), "acyclic", np.arange(5)),
    ]
    for p, method, colors in cases:
        msgs = []
        for compiled in (True, False):
            with monkeypatch.context() as m:
                if compiled:
                    m.setenv("SPARSEOPT_ADAPTERS_COLORING", "numba")
                else:
                    m.setattr(_kernels, "_COMPILED", False)
                with pytest.raises(ValueError) as e:
                    D.BUILDERS[method](p, colors, "x")
                msgs.append(str(e.value))
        assert msgs[0] == msgs[1], (method, msgs)
