"""Compressed Jacobians and Hessians: one batch of JVPs / VJPs / HVPs per call, decompressed
into values on a fixed pattern.

Detection and coloring happen once, when [`sparse_jacobian`][] / [`sparse_hessian`][] build
their object; every call is then one jitted function whose index data is static numpy data
(never a traced array). Calling twice with the same shapes does not retrace.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental import sparse as jsparse
from jax.flatten_util import ravel_pytree

from ._coloring import ColoringResult, color_hessian, color_jacobian
from ._pattern import SparsityPattern, text_spy

# ---------------------------------------------------------------------------------------
# Decompression (shared by every object below; jit-able)
# ---------------------------------------------------------------------------------------


def _substitute(compressed, subst):
    """Values of the off-diagonal tree edges of an acyclic coloring (see `Substitution`)."""
    blocks, child_pos, child_end, child_sign = subst
    if child_pos.shape[0] == 0:
        return jnp.zeros((0,), compressed.dtype)
    ext = jnp.concatenate([compressed, jnp.zeros((1,), compressed.dtype)])
    sums = []
    for index, sign in blocks:
        rows = ext[index] * sign.astype(compressed.dtype)
        # reverse cumulative sum along each row (one tree per row, zero padded)
        sums.append(jax.lax.cumsum(rows, axis=1, reverse=True).reshape(-1))
    r = jnp.concatenate(sums) if len(sums) > 1 else sums[0]
    return child_sign.astype(compressed.dtype) * (r[child_pos] - r[child_end])


def _index_data(coloring: ColoringResult):
    """The numpy index arrays a call needs, in the smallest integer type that fits."""

    def small(a):
        a = np.asarray(a)
        if a.size == 0 or (a.min() >= np.iinfo(np.int32).min and a.max() < np.iinfo(np.int32).max):
            return a.astype(np.int32)
        return a.astype(np.int64)

    d = {
        "col_colors": small(coloring.column_colors),
        "row_colors": small(coloring.row_colors),
        "gather": small(coloring.gather),
    }
    s = coloring.substitution
    if s is not None:
        d["subst"] = (
            tuple((small(i), np.asarray(sg)) for i, sg in s.blocks),
            small(s.child_pos),
            small(s.child_end),
            np.asarray(s.child_sign),
        )
    return d


def _decompress(compressed, index):
    if "subst" in index:
        compressed = jnp.concatenate([compressed, _substitute(compressed, index["subst"])])
    return compressed[index["gather"]]


def decompress(coloring: ColoringResult, compressed) -> jax.Array:
    """Values on ``coloring.pattern`` (pattern order) from the compressed products.

    Args:
        coloring: a [`ColoringResult`][].
        compressed: the forward products ``(n_forward, m)`` raveled, followed by the reverse
            products ``(n_reverse, n)`` raveled (for Hessians: the HVPs ``(n_colors, n)``).

    Returns:
        A 1-D array of ``coloring.pattern.nnz`` values. Jit-able.

    Example:
        >>> import numpy as np
        >>> import sparseopt_adapters as sa
        >>> from sparseopt_adapters._compressed import decompress
        >>> A = np.diag([1.0, 2.0, 3.0]) + np.diag([4.0, 5.0], k=1)
        >>> c = sa.color_jacobian(sa.SparsityPattern.from_dense(A), mode="forward")
        >>> S, _ = c.seeds()
        >>> np.asarray(decompress(c, (A @ S.T).T.ravel()))
        array([1., 4., 2., 5., 3.])
    """
    compressed = jnp.asarray(compressed).reshape(-1)
    if compressed.shape[0] != coloring.compressed_size:
        raise ValueError(
            f"decompress: expected {coloring.compressed_size} compressed values for "
            f"{coloring!r}, got {compressed.shape[0]}."
        )
    return _decompress_jit(compressed, _index_data(coloring))


_decompress_jit = jax.jit(_decompress)


# ---------------------------------------------------------------------------------------
# Flattening f(*args) -> 1-D, w.r.t. 1-D
# ---------------------------------------------------------------------------------------
class _Flat:
    """``f`` seen as a map from the raveled ``args[argnums]`` to its raveled output."""

    def __init__(self, f, example_args, argnums, caller):
        if not callable(f):
            raise TypeError(f"{caller}: f must be callable, got {type(f).__name__}.")
        nargs = len(example_args)
        if nargs == 0:
            raise TypeError(
                f"{caller}(f, *example_args) needs example arguments to find the shapes, e.g. "
                f"{caller}(f, x0)."
            )
        single = isinstance(argnums, int | np.integer)
        nums = (int(argnums),) if single else tuple(int(a) for a in argnums)
        for a in nums:
            if not -nargs <= a < nargs:
                raise ValueError(
                    f"{caller}: argnums={argnums!r} is out of range for {nargs} example "
                    "argument(s)."
                )
        self.f = f
        self.single = single
        self.argnums = tuple(a % nargs for a in nums)
        self.caller = caller
        xs = self._select(example_args)
        x_shape = jax.eval_shape(lambda t: ravel_pytree(t)[0], xs)
        if not jnp.issubdtype(x_shape.dtype, jnp.inexact):
            raise TypeError(
                f"{caller}: can only differentiate with respect to floating-point arguments, "
                f"but args[{argnums}] ravels to dtype {x_shape.dtype}. Pass floats, e.g. "
                "x.astype(float)."
            )
        self.n = int(x_shape.shape[0])
        self.x_dtype = x_shape.dtype
        out = jax.eval_shape(lambda *a: ravel_pytree(f(*a))[0], *example_args)
        self.m = int(out.shape[0])
        self.out_dtype = out.dtype
        self.nargs = nargs

    def _select(self, args):
        return args[self.argnums[0]] if self.single else tuple(args[a] for a in self.argnums)

    def split(self, args):
        """``(x_flat, rebuild)`` with ``rebuild(z)`` the raveled output at ``z``."""
        if len(args) != self.nargs:
            raise TypeError(
                f"Called with {len(args)} argument(s), but the derivative was built for "
                f"{self.nargs} (the example arguments)."
            )
        x_flat, unravel = ravel_pytree(self._select(args))

        def g(z):
            new = list(args)
            xs = unravel(z)
            if self.single:
                new[self.argnums[0]] = xs
            else:
                for a, xa in zip(self.argnums, xs, strict=True):
                    new[a] = xa
            return ravel_pytree(self.f(*new))[0]

        return x_flat, g


def _map_seeds(fun, seeds, chunk_size, mesh=None):
    """``vmap(fun)(seeds)``, or ``lax.map`` over chunks of ``chunk_size`` seeds; with a
    ``mesh``, the seeds are split over its devices (see `_sharding.map_seeds_sharded`)."""
    if mesh is not None:
        from ._sharding import map_seeds_sharded

        return map_seeds_sharded(fun, seeds, chunk_size, mesh)
    c = seeds.shape[0]
    if chunk_size is None or chunk_size >= c:
        return jax.vmap(fun)(seeds)
    k = -(-c // chunk_size)
    pad = k * chunk_size - c
    s = jnp.concatenate([seeds, jnp.zeros((pad,) + seeds.shape[1:], seeds.dtype)])
    out = jax.lax.map(jax.vmap(fun), s.reshape((k, chunk_size) + seeds.shape[1:]))
    return out.reshape((k * chunk_size,) + out.shape[2:])[:c]


# Seed matrices up to this many entries are compile-time constants: XLA then folds the
# linear tangent work that depends on the seeds alone (pads, slices, reshapes) and a call
# is up to ~3x faster (2-D Bratu, n = 1e4: 47 vs 133 us). Larger ones are built from the
# colors at run time, because folding them costs seconds of compile time (5 s at 5e6).
_CONST_SEEDS_MAX = 1 << 20


def _const_seeds(coloring: ColoringResult):
    m, n = coloring.pattern.shape
    if coloring.n_forward * n + coloring.n_reverse * m > _CONST_SEEDS_MAX:
        return None
    return coloring.seeds()


def _seeds(colors, k, dtype):
    """``(k, len(colors))`` 0/1 seeds; color ``-1`` is in no seed."""
    return (jnp.arange(k, dtype=colors.dtype)[:, None] == colors[None, :]).astype(dtype)


def _check_mesh(mesh, caller):
    if mesh is None:
        return None
    from ._sharding import check_mesh

    return check_mesh(mesh, caller)


def _check_chunk(chunk_size, caller):
    if chunk_size is not None and (not isinstance(chunk_size, int | np.integer) or chunk_size < 1):
        raise ValueError(
            f"{caller}: chunk_size must be a positive int or None, got {chunk_size!r}."
        )
    return None if chunk_size is None else int(chunk_size)


class _Static:
    """Index arrays for calls: device arrays when they can be made outside a trace."""

    def __init__(self, data):
        self.numpy = data
        try:
            dev = jax.tree_util.tree_map(jnp.asarray, data)
        except Exception:  # pragma: no cover - defensive
            dev = None
        leaves = jax.tree_util.tree_leaves(dev) if dev is not None else []
        if dev is None or any(isinstance(x, jax.core.Tracer) for x in leaves):
            dev = None  # built inside a trace: keep numpy (never cache a tracer)
        self._dev = dev

    def get(self):
        return self._dev if self._dev is not None else self.numpy


def _bcoo_indices(obj, values):
    """BCOO indices: numpy inside a trace (a constant), else a cached device array."""
    if obj._bcoo_indices_np is None:
        p = obj.pattern
        obj._bcoo_indices_np = np.stack([p.rows, p.cols], axis=1).astype(
            np.int32 if max(p.shape) < 2**31 - 1 else np.int64
        )
    if isinstance(values, jax.core.Tracer):
        return obj._bcoo_indices_np
    if obj._bcoo_indices is None:
        obj._bcoo_indices = jnp.asarray(obj._bcoo_indices_np)
    return obj._bcoo_indices


class _ScipyLayout:
    """Precomputed CSR/CSC index arrays of a pattern (values never need sorting)."""

    def __init__(self, pattern):
        self.pattern = pattern
        m, n = pattern.shape
        self.indptr = np.zeros(m + 1, np.int64)
        np.cumsum(np.bincount(pattern.rows, minlength=m), out=self.indptr[1:])
        self._csc = None

    def csc(self):
        if self._csc is None:
            p = self.pattern
            perm = np.lexsort((p.rows, p.cols))
            indptr = np.zeros(p.shape[1] + 1, np.int64)
            np.cumsum(np.bincount(p.cols, minlength=p.shape[1]), out=indptr[1:])
            self._csc = (perm, p.rows[perm], indptr)
        return self._csc

    def build(self, values, format):
        values = np.asarray(values)
        p = self.pattern
        if values.shape != (p.nnz,):
            raise ValueError(
                f"to_scipy: expected {p.nnz} values in pattern order, got shape {values.shape}."
            )
        if format == "csr":
            return sp.csr_array((values, p.cols.copy(), self.indptr.copy()), shape=p.shape)
        if format == "coo":
            return sp.coo_array((values, (p.rows.copy(), p.cols.copy())), shape=p.shape)
        if format == "csc":
            perm, indices, indptr = self.csc()
            return sp.csc_array((values[perm], indices.copy(), indptr.copy()), shape=p.shape)
        raise ValueError(f"to_scipy: format must be 'csr', 'csc' or 'coo', got {format!r}.")


# ---------------------------------------------------------------------------------------
# Jacobians
# ---------------------------------------------------------------------------------------
class SparseJacobian:
    """A compressed sparse Jacobian of ``f`` on a fixed pattern; see [`sparse_jacobian`][].

    Attributes:
        pattern: the ``(m, n)`` [`SparsityPattern`][].
        coloring: the [`ColoringResult`][].
        mode: ``"forward"``, ``"reverse"`` or ``"bidirectional"``.
        n_colors: products per call (``jvp_count + vjp_count``).
        chunk_size: products per batch (``None``: all in one batch).
        mesh: the `jax.sharding.Mesh` the products are split over (``None``: one device).
    """

    def __init__(self, flat: _Flat, coloring: ColoringResult, chunk_size=None, mesh=None):
        m, n = coloring.pattern.shape
        if (m, n) != (flat.m, flat.n):
            raise ValueError(
                f"The pattern has shape {(m, n)}, but f maps {flat.n} inputs to {flat.m} "
                f"outputs: the Jacobian is {(flat.m, flat.n)}. Pass a pattern of that shape."
            )
        if coloring.mode not in ("forward", "reverse", "bidirectional"):
            raise ValueError(
                f"A Jacobian needs a forward/reverse/bidirectional coloring, got {coloring!r}."
            )
        self._flat = flat
        self.coloring = coloring
        self.pattern = coloring.pattern
        self.chunk_size = chunk_size
        self.mesh = mesh
        self._static = _Static(_index_data(coloring))
        self._const_seeds = _const_seeds(coloring)
        self._layout = _ScipyLayout(self.pattern)
        self._bcoo_indices_np = None  # built on the first __call__
        self._bcoo_indices = None  # device copy, made on the first call outside a trace
        self._values_jit = jax.jit(self._values_impl)
        self._compressed_jit = jax.jit(self._compressed_impl)
        # -- issue 17 hook (owner: _sharding): with a mesh, pick colour or variable
        # sharding; the variable path replaces the two jitted calls above --
        self.sharding, self.plan = "none", None
        if mesh is not None:
            from ._sharding import attach

            attach(self)
        # -- end of hook --

    # -- properties -------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self.coloring.mode

    @property
    def n_colors(self) -> int:
        return self.coloring.n_colors

    @property
    def jvp_count(self) -> int:
        return self.coloring.n_forward

    @property
    def vjp_count(self) -> int:
        return self.coloring.n_reverse

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.shape

    @property
    def nnz(self) -> int:
        return self.pattern.nnz

    # -- evaluation -------------------------------------------------------------------
    def _compressed_impl(self, index, *args):
        x, g = self._flat.split(args)
        c = self.coloring
        parts = []
        if c.n_forward:
            seeds = (jnp.asarray(self._const_seeds[0], x.dtype) if self._const_seeds
                     else _seeds(index["col_colors"], c.n_forward, x.dtype))
            fwd = _map_seeds(lambda s: jax.jvp(g, (x,), (s,))[1], seeds, self.chunk_size,
                             self.mesh)
            parts.append(fwd.reshape(-1))
        if c.n_reverse:
            y, pull = jax.vjp(g, x)
            seeds = (jnp.asarray(self._const_seeds[1], y.dtype) if self._const_seeds
                     else _seeds(index["row_colors"], c.n_reverse, y.dtype))
            rev = _map_seeds(lambda s: pull(s)[0], seeds, self.chunk_size, self.mesh)
            parts.append(rev.reshape(-1))
        if not parts:
            return jnp.zeros((0,), self._flat.out_dtype)
        return jnp.concatenate(parts) if len(parts) > 1 else parts[0]

    def _values_impl(self, index, *args):
        if self.coloring.n_colors == 0:
            return jnp.zeros((0,), jnp.result_type(self._flat.out_dtype, self._flat.x_dtype))
        return _decompress(self._compressed_impl(index, *args), index)

    def values(self, *args) -> jax.Array:
        """The ``nnz`` Jacobian values at ``args``, in pattern order (jit-able)."""
        return self._values_jit(self._static.get(), *args)

    def compressed(self, *args) -> jax.Array:
        """The raw products: forward ``(n_forward, m)`` then reverse ``(n_reverse, n)``, raveled."""
        return self._compressed_jit(self._static.get(), *args)

    def __call__(self, *args) -> jsparse.BCOO:
        """The Jacobian at ``args`` as a BCOO matrix on ``pattern`` (``.todense()`` works)."""
        v = self.values(*args)
        idx = _bcoo_indices(self, v)
        return jsparse.BCOO(
            (v, idx), shape=self.pattern.shape, indices_sorted=True, unique_indices=True
        )

    def todense(self, *args) -> jax.Array:
        """The Jacobian at ``args`` as a dense array (for checks and small problems)."""
        v = self.values(*args)
        p = self.pattern
        return jnp.zeros(p.shape, v.dtype).at[p.rows, p.cols].set(v)

    def to_scipy(self, values, format: str = "csr"):
        """A scipy sparse array from ``values`` (pattern order), without sorting.

        The CSR index arrays are precomputed (pattern order is CSR order); ``"csc"`` uses a
        precomputed permutation, ``"coo"`` the pattern's rows/cols.
        """
        return self._layout.build(values, format)

    # -- pictures ---------------------------------------------------------------------
    def __repr__(self) -> str:
        m, n = self.pattern.shape
        c = self.coloring
        k = (f"{c.n_forward} JVPs + {c.n_reverse} VJPs" if c.mode == "bidirectional"
             else f"{c.n_colors} colors")
        return f"SparseJacobian({m}×{n}, nnz={self.pattern.nnz}, {c.mode}, {k})"

    def __str__(self) -> str:
        return repr(self) + "\n" + text_spy(self.pattern, labels=self.coloring.entry_colors())

    def spy(self, ax=None, **kwargs):
        """Matplotlib picture of the pattern colored by product."""
        return self.coloring.spy(ax=ax, **kwargs)


def _lazy_detection(name):
    try:
        from . import _detection
    except ImportError as e:  # pragma: no cover - until detection lands
        raise ImportError(
            f"Sparsity detection ({name}) is not available in this build; pass pattern= "
            "(a SparsityPattern) explicitly."
        ) from e
    return getattr(_detection, name)


def sparse_jacobian(
    f,
    *example_args,
    argnums=0,
    mode: str = "auto",
    order="best",
    pattern: SparsityPattern | None = None,
    chunk_size: int | None = None,
    coloring: ColoringResult | None = None,
    mesh=None,
) -> SparseJacobian:
    """A sparse Jacobian of ``f``: detection and coloring once, then cheap jit-able calls.

    The Jacobian is that of ``ravel_pytree(f(*args))[0]`` with respect to
    ``ravel_pytree(args[argnums])[0]`` (a tuple ``argnums`` ravels those arguments together).

    Args:
        f: a JAX-traceable function.
        *example_args: arguments to find shapes and the pattern (arrays or
            ``jax.ShapeDtypeStruct`` when ``pattern`` is given).
        argnums: which argument(s) to differentiate, as in `jax.jacfwd`.
        mode: ``"forward"`` (JVPs), ``"reverse"`` (VJPs), ``"bidirectional"`` or ``"auto"``
            (fewest products; see [`color_jacobian`][]).
        order: vertex order for coloring (default ``"best"``).
        pattern: the Jacobian pattern; detected with `jacobian_sparsity` when ``None``.
        chunk_size: at most this many products per batch (bounds memory); ``None`` = one
            batch.
        coloring: a precomputed [`ColoringResult`][] (e.g. loaded from disk); overrides
            ``pattern``, ``mode`` and ``order``.
        mesh: a `jax.sharding.Mesh` (or a list of devices) to split the products over,
            same values in the same order (see ``docs/sharding.md``); ``None`` = one device.

    Returns:
        A [`SparseJacobian`][]: ``jac(*args)`` is a BCOO matrix, ``jac.values(*args)`` the
        values in pattern order; wrap either in `jax.jit` freely.

    Example:
        >>> import jax.numpy as jnp
        >>> import sparseopt_adapters as sa
        >>> f = lambda x: x[1:] ** 2 - x[:-1]
        >>> p = sa.SparsityPattern.from_dense(jnp.eye(5, 6) + jnp.eye(5, 6, k=1))
        >>> jac = sa.sparse_jacobian(f, jnp.ones(6), pattern=p)
        >>> jac
        SparseJacobian(5×6, nnz=10, forward, 2 colors)
        >>> jac(jnp.arange(6.0)).todense()[0]
        Array([-1.,  2.,  0.,  0.,  0.,  0.], dtype=float64)
    """
    flat = _Flat(f, example_args, argnums, "sparse_jacobian")
    chunk_size = _check_chunk(chunk_size, "sparse_jacobian")
    mesh = _check_mesh(mesh, "sparse_jacobian")
    if coloring is None:
        if pattern is None:
            pattern = _lazy_detection("jacobian_sparsity")(f, *example_args, argnums=argnums)
        if not isinstance(pattern, SparsityPattern):
            raise TypeError(
                f"sparse_jacobian: pattern must be a SparsityPattern, got "
                f"{type(pattern).__name__}."
            )
        if pattern.shape != (flat.m, flat.n):
            raise ValueError(
                f"sparse_jacobian: pattern has shape {pattern.shape}, but f maps {flat.n} "
                f"inputs to {flat.m} outputs, so the Jacobian is {(flat.m, flat.n)}."
            )
        coloring = color_jacobian(pattern, mode=mode, order=order)
        if mode == "auto":
            jac = SparseJacobian(flat, coloring, chunk_size, mesh)
            if _traces(jac, example_args):
                return jac
            # e.g. while_loop (no reverse mode) or custom_vjp (no forward mode): use the
            # other direction, if JAX can do it
            for other in ("forward", "reverse"):
                alt = SparseJacobian(
                    flat, color_jacobian(pattern, mode=other, order=order, warn=False),
                    chunk_size, mesh,
                )
                if _traces(alt, example_args):
                    return alt
            return jac  # let the call raise JAX's own error
    return SparseJacobian(flat, coloring, chunk_size, mesh)


def _traces(jac: SparseJacobian, example_args) -> bool:
    """Whether JAX can trace the products of ``jac`` (checked abstractly, no compile)."""
    try:
        jax.eval_shape(jac._compressed_impl, jac._static.numpy, *example_args)
    except (TypeError, ValueError, NotImplementedError):
        return False
    return True


# ---------------------------------------------------------------------------------------
# Hessians
# ---------------------------------------------------------------------------------------
class SparseHessian:
    """A compressed sparse Hessian of a scalar ``f``; see [`sparse_hessian`][].

    Attributes:
        pattern: the full symmetric ``(n, n)`` [`SparsityPattern`][].
        lower_pattern: ``pattern.lower()`` (the order of `lower_values`, as IPOPT wants).
        coloring: the [`ColoringResult`][] (``"star"`` or ``"acyclic"``).
        n_colors: Hessian-vector products per call.
        mesh: the `jax.sharding.Mesh` the products are split over (``None``: one device).
    """

    def __init__(self, flat: _Flat, coloring: ColoringResult, chunk_size=None, mesh=None):
        if flat.m != 1:
            raise ValueError(
                f"sparse_hessian needs a scalar-valued f, but f returns {flat.m} values. For "
                "a vector function use sparse_jacobian."
            )
        if coloring.pattern.shape != (flat.n, flat.n):
            raise ValueError(
                f"The Hessian pattern has shape {coloring.pattern.shape}, but f has {flat.n} "
                "inputs."
            )
        if coloring.mode not in ("star", "acyclic"):
            raise ValueError(f"A Hessian needs a star or acyclic coloring, got {coloring!r}.")
        self._flat = flat
        self.coloring = coloring
        self.pattern = coloring.pattern
        self.lower_pattern = self.pattern.lower()
        self.chunk_size = chunk_size
        self.mesh = mesh
        self._lower_pos = self.pattern.positions(self.lower_pattern.rows, self.lower_pattern.cols)
        index = _index_data(coloring)
        self._static = _Static(index)
        self._const_seeds = _const_seeds(coloring)
        lower_pos = self._lower_pos.astype(np.int32 if self.pattern.nnz < 2**31 else np.int64)
        # lower values = a gather of the full values: one compiled HVP batch serves both
        self._take_lower = jax.jit(lambda v: v[lower_pos])
        self._layout = _ScipyLayout(self.pattern)
        self._layout_lower = _ScipyLayout(self.lower_pattern)
        self._bcoo_indices_np = None  # built on the first __call__
        self._bcoo_indices = None  # device copy, made on the first call outside a trace
        self._values_jit = jax.jit(self._values_impl)
        self._compressed_jit = jax.jit(self._compressed_impl)
        # -- issue 17 hook (owner: _sharding): with a mesh, pick colour or variable
        # sharding; the variable path replaces the two jitted calls above --
        self.sharding, self.plan = "none", None
        if mesh is not None:
            from ._sharding import attach

            attach(self)
        # -- end of hook --

    @property
    def n_colors(self) -> int:
        return self.coloring.n_colors

    @property
    def hvp_count(self) -> int:
        return self.coloring.n_colors

    @property
    def method(self) -> str:
        return self.coloring.mode

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.shape

    @property
    def nnz(self) -> int:
        return self.pattern.nnz

    def _compressed_impl(self, index, *args):
        x, g = self._flat.split(args)
        k = self.coloring.n_colors
        grad = jax.grad(lambda z: g(z)[0])
        seeds = (jnp.asarray(self._const_seeds[0], x.dtype) if self._const_seeds
                 else _seeds(index["col_colors"], k, x.dtype))
        # forward-over-reverse: linearize the gradient once, push every seed through it
        out = _map_seeds(lambda s: jax.jvp(grad, (x,), (s,))[1], seeds, self.chunk_size,
                         self.mesh)
        return out.reshape(-1)

    def _values_impl(self, index, *args):
        if self.coloring.n_colors == 0:
            return jnp.zeros((0,), self._flat.x_dtype)
        return _decompress(self._compressed_impl(index, *args), index)

    def values(self, *args) -> jax.Array:
        """The ``nnz`` Hessian values (both triangles), in pattern order (jit-able)."""
        return self._values_jit(self._static.get(), *args)

    def lower_values(self, *args) -> jax.Array:
        """The values of the lower triangle in ``lower_pattern`` order (IPOPT's order)."""
        return self._take_lower(self.values(*args))

    def compressed(self, *args) -> jax.Array:
        """The raw Hessian-vector products ``(n_colors, n)``, raveled."""
        return self._compressed_jit(self._static.get(), *args)

    def __call__(self, *args) -> jsparse.BCOO:
        """The Hessian at ``args`` as a symmetric BCOO matrix on ``pattern``."""
        v = self.values(*args)
        idx = _bcoo_indices(self, v)
        return jsparse.BCOO(
            (v, idx), shape=self.pattern.shape, indices_sorted=True, unique_indices=True
        )

    def todense(self, *args) -> jax.Array:
        v = self.values(*args)
        p = self.pattern
        return jnp.zeros(p.shape, v.dtype).at[p.rows, p.cols].set(v)

    def to_scipy(self, values, format: str = "csr"):
        """A scipy sparse array: the full matrix from `values`, or the lower triangle from
        `lower_values` (told apart by length)."""
        values = np.asarray(values)
        if values.shape == (self.pattern.nnz,):
            return self._layout.build(values, format)
        if values.shape == (self.lower_pattern.nnz,):
            return self._layout_lower.build(values, format)
        raise ValueError(
            f"to_scipy: expected {self.pattern.nnz} values (full pattern) or "
            f"{self.lower_pattern.nnz} (lower triangle), got shape {values.shape}."
        )

    def __repr__(self) -> str:
        n = self.pattern.shape[0]
        return (f"SparseHessian({n}×{n}, nnz={self.pattern.nnz}, {self.coloring.mode}, "
                f"{self.n_colors} colors)")

    def __str__(self) -> str:
        return repr(self) + "\n" + text_spy(self.pattern, labels=self.coloring.entry_colors())

    def spy(self, ax=None, **kwargs):
        return self.coloring.spy(ax=ax, **kwargs)


def sparse_hessian(
    f,
    *example_args,
    argnums=0,
    method: str = "auto",
    order="best",
    pattern: SparsityPattern | None = None,
    chunk_size: int | None = None,
    coloring: ColoringResult | None = None,
    mesh=None,
) -> SparseHessian:
    """A sparse Hessian of a scalar ``f`` from colored Hessian-vector products.

    HVPs are forward-over-reverse (`jax.jvp` of `jax.grad`), one vmapped batch per call.

    Args:
        f: a JAX-traceable scalar function.
        *example_args: arguments to find shapes and the pattern.
        argnums: which argument(s) to differentiate (raveled together).
        method: ``"star"`` (direct), ``"acyclic"`` (substitution) or ``"auto"``
            (see [`color_hessian`][]).
        order: vertex order for coloring (default ``"best"``).
        pattern: the Hessian pattern (symmetrized; a lower triangle is accepted);
            detected with `hessian_sparsity` when ``None``.
        chunk_size: at most this many HVPs per batch.
        coloring: a precomputed [`ColoringResult`][]; overrides ``pattern``/``method``.
        mesh: a `jax.sharding.Mesh` (or a list of devices) to split the HVPs over, same
            values in the same order (see ``docs/sharding.md``); ``None`` = one device.

    Returns:
        A [`SparseHessian`][].

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> import sparseopt_adapters as sa
        >>> f = lambda x: jnp.sum((x[1:] - x[:-1] ** 2) ** 2)
        >>> p = sa.SparsityPattern.from_dense(jnp.eye(6) + jnp.eye(6, k=1) + jnp.eye(6, k=-1))
        >>> hess = sa.sparse_hessian(f, jnp.ones(6), pattern=p)
        >>> hess.method, hess.n_colors
        ('star', 3)
        >>> bool(jnp.allclose(hess(jnp.arange(6.0)).todense(), jax.hessian(f)(jnp.arange(6.0))))
        True
    """
    flat = _Flat(f, example_args, argnums, "sparse_hessian")
    chunk_size = _check_chunk(chunk_size, "sparse_hessian")
    mesh = _check_mesh(mesh, "sparse_hessian")
    if flat.m != 1:
        raise ValueError(
            f"sparse_hessian needs a scalar-valued f, but f returns {flat.m} values. For a "
            "vector function use sparse_jacobian."
        )
    if coloring is None:
        if pattern is None:
            pattern = _lazy_detection("hessian_sparsity")(f, *example_args, argnums=argnums)
        if not isinstance(pattern, SparsityPattern):
            raise TypeError(
                f"sparse_hessian: pattern must be a SparsityPattern, got {type(pattern).__name__}."
            )
        if pattern.shape != (flat.n, flat.n):
            raise ValueError(
                f"sparse_hessian: pattern has shape {pattern.shape}, but f has {flat.n} inputs."
            )
        coloring = color_hessian(pattern, method=method, order=order)
    return SparseHessian(flat, coloring, chunk_size, mesh)


# ---------------------------------------------------------------------------------------
# Lagrangian Hessian for NLP solvers
# ---------------------------------------------------------------------------------------
class SparseLagrangianHessian:
    """``(x, sigma, lam, *args) -> `` lower triangle of ``∇²ₓ(σ f + λᵀ c)``, IPOPT order.

    Attributes:
        pattern: full symmetric union pattern of the Hessians of ``f`` and every ``c_i``.
        lower_pattern: ``pattern.lower()``: the order of the returned values.
        hessian: the underlying [`SparseHessian`][] of ``(x, sigma, lam, *args)``.
        n_colors: Hessian-vector products per call.
        n_constraints: ``m``, the length of ``lam``.
    """

    def __init__(self, hessian: SparseHessian, n_constraints: int):
        self.hessian = hessian
        self.pattern = hessian.pattern
        self.lower_pattern = hessian.lower_pattern
        self.n_constraints = n_constraints

    @property
    def n_colors(self) -> int:
        return self.hessian.n_colors

    @property
    def coloring(self) -> ColoringResult:
        return self.hessian.coloring

    def __call__(self, x, sigma, lam, *args) -> jax.Array:
        return self.hessian.lower_values(x, sigma, lam, *args)

    def lower_values(self, x, sigma, lam, *args) -> jax.Array:
        return self.hessian.lower_values(x, sigma, lam, *args)

    def values(self, x, sigma, lam, *args) -> jax.Array:
        """Both triangles, in ``pattern`` order."""
        return self.hessian.values(x, sigma, lam, *args)

    def to_scipy(self, values, format: str = "csr"):
        return self.hessian.to_scipy(values, format)

    def __repr__(self) -> str:
        n = self.pattern.shape[0]
        return (f"SparseLagrangianHessian({n}×{n}, m={self.n_constraints}, "
                f"nnz_lower={self.lower_pattern.nnz}, {self.coloring.mode}, "
                f"{self.n_colors} colors)")


def sparse_lagrangian_hessian(
    f,
    c,
    *example_args,
    method: str = "auto",
    order="best",
    pattern: SparsityPattern | None = None,
    chunk_size: int | None = None,
    mesh=None,
) -> SparseLagrangianHessian:
    """The Hessian of the Lagrangian ``σ f(x) + λᵀ c(x)`` with ``σ``, ``λ`` given per call.

    Args:
        f: objective ``f(x, *args) -> scalar``.
        c: constraints ``c(x, *args) -> array`` (any shape, raveled), or ``None``.
        *example_args: ``(x0, *args)``; ``x0`` is the variable (a pytree is raveled).
        method, order, chunk_size, mesh: as in [`sparse_hessian`][].
        pattern: the union Hessian pattern; detected when ``None`` (the union of the
            patterns of ``f`` and of ``sum(c)``).

    Returns:
        A [`SparseLagrangianHessian`][]; ``obj(x, sigma, lam, *args)`` returns the
        ``lower_pattern.nnz`` values of the lower triangle in ``lower_pattern`` order.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> import sparseopt_adapters as sa
        >>> f = lambda x: jnp.sum(x ** 4)
        >>> c = lambda x: x[:-1] * x[1:]
        >>> p = sa.SparsityPattern.from_dense(np.eye(4) + np.eye(4, k=1) + np.eye(4, k=-1))
        >>> lag = sa.sparse_lagrangian_hessian(f, c, jnp.ones(4), pattern=p)
        >>> lag.lower_pattern.nnz
        7
        >>> lag(jnp.ones(4), 1.0, jnp.array([1.0, 2.0, 3.0]))
        Array([12.,  1., 12.,  2., 12.,  3., 12.], dtype=float64)
    """
    if not example_args:
        raise TypeError("sparse_lagrangian_hessian(f, c, x0, *args) needs an example x0.")
    x0, rest = example_args[0], example_args[1:]
    if c is None:
        m = 0

        def cfun(x, *a):
            return jnp.zeros((0,), jnp.result_type(float))
    else:
        cfun = c
        m = int(jax.eval_shape(lambda *a: ravel_pytree(c(*a))[0], *example_args).shape[0])

    def lagrangian(x, sigma, lam, *a):
        val = sigma * f(x, *a)
        if m:
            val = val + jnp.dot(jnp.reshape(lam, (-1,)), ravel_pytree(cfun(x, *a))[0])
        return val

    if pattern is None:
        hs = _lazy_detection("hessian_sparsity")
        pattern = hs(f, *example_args)
        if m:
            pattern = pattern.union(hs(lambda *a: jnp.sum(ravel_pytree(cfun(*a))[0]),
                                       *example_args))
    x_dtype = jax.eval_shape(lambda t: ravel_pytree(t)[0], x0).dtype
    lam0 = jax.ShapeDtypeStruct((m,), x_dtype)
    sigma0 = jax.ShapeDtypeStruct((), x_dtype)
    hess = sparse_hessian(
        lagrangian, x0, sigma0, lam0, *rest, argnums=0, method=method, order=order,
        pattern=pattern, chunk_size=chunk_size, mesh=mesh,
    )
    return SparseLagrangianHessian(hess, m)
