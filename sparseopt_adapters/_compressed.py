"""Compressed Jacobians and Hessians: one batch of JVPs / VJPs / HVPs per call, decompressed
into values on a fixed pattern.

Detection and coloring happen once, when [`sparse_jacobian`][] / [`sparse_hessian`][] build
their object; every call is then one jitted function whose index data are arguments (never a
traced array kept between traces, never a large baked constant). Calling twice with the same
shapes does not retrace, and building the same derivative again (same function object,
argument shapes/dtypes, integer argument values and options) reuses the setup and the compiled
code through the package's setup cache (`sa.cache_info()`, `sa.set_cache_size(0)` to opt out).

Integer and boolean arguments that were concrete when the pattern was detected are index
data: the pattern was detected *for those values*. A call with other values raises a
`ValueError` (checked on the host for concrete values, and in the graph with
`equinox.error_if` when the values are traced under an outer `jax.jit`). A derivative built
under `jax.jit` with traced index arguments has a pattern valid for every value and checks
nothing.
"""

from __future__ import annotations

import abc
import copy
import types
import weakref

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.experimental import sparse as jsparse
from jax.flatten_util import ravel_pytree

from ._cache import cached, structure_key
from ._coloring import ColoringResult, color_hessian, color_jacobian
from ._pattern import SparsityPattern, text_spy
from ._products import HVP_MODES, hvps, jvps, vjps
from ._products import decompress_index as _decompress
from ._products import seeds as make_seeds

# ---------------------------------------------------------------------------------------
# Decompression (shared by every object below; jit-able)
# ---------------------------------------------------------------------------------------


def _small(a):
    """``a`` in the smallest integer type that fits (int32 almost always)."""
    a = np.asarray(a)
    if a.size == 0 or (a.min() >= np.iinfo(np.int32).min and a.max() < np.iinfo(np.int32).max):
        return a.astype(np.int32)
    return a.astype(np.int64)


def _index_data(coloring: ColoringResult):
    """The numpy index arrays a call needs (arguments of the compiled call, not constants)."""
    d = {
        "col_colors": _small(coloring.column_colors),
        "row_colors": _small(coloring.row_colors),
        "gather": _small(coloring.gather),
    }
    s = coloring.substitution
    if s is not None:
        d["subst"] = (
            tuple((_small(i), np.asarray(sg)) for i, sg in s.blocks),
            _small(s.child_pos),
            _small(s.child_end),
            np.asarray(s.child_sign),
        )
    return d


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
# Integer arguments frozen into the pattern
# ---------------------------------------------------------------------------------------
def _is_index_data(leaf) -> bool:
    """Whether detection read ``leaf``'s values (concrete integer/bool data, as in
    `_detection._api._input_abstracts`)."""
    if isinstance(leaf, jax.ShapeDtypeStruct | jax.core.Tracer):
        return False
    dtype = getattr(leaf, "dtype", None)
    dtype = np.dtype(dtype) if dtype is not None else np.result_type(leaf)
    return not np.issubdtype(dtype, np.inexact)


def _int_hash(a, xp):
    """A 32-bit wrap-around hash of the integer/bool array ``a``, identical in numpy
    (``xp=np``) and in the graph (``xp=jnp``) for the same dtype: each element's 32-bit words
    and its position are mixed (multiply, xor-shift) and summed, one pass over ``a``.
    Conversions to uint32 keep the low bits on both sides."""
    u = xp.uint32
    a = a.reshape(-1)
    if a.dtype == xp.bool_:
        a = a.astype(xp.uint8)
    w = a.astype(u) * u(0x85EBCA6B)
    if a.dtype.itemsize == 8:
        w = w + (a >> 32).astype(u) * u(0xC2B2AE35)
    w = w + xp.arange(a.shape[0], dtype=u) * u(0x9E3779B1) + u(0x7F4A7C15)
    w = (w ^ (w >> u(15))) * u(0x27D4EB2F)
    w = w ^ (w >> u(13))
    return xp.sum(w, dtype=u)


class _Frozen:
    """The index-data leaves detection read, and how to check a call's leaves against them."""

    def __init__(self, example_args, caller):
        leaves, self.treedef = jax.tree_util.tree_flatten_with_path(tuple(example_args))
        self.caller = caller
        self.items = []  # (position among the leaves, name, numpy copy)
        for pos, (path, leaf) in enumerate(leaves):
            if _is_index_data(leaf):
                value = np.array(leaf)
                value.setflags(write=False)
                self.items.append((pos, "args" + jax.tree_util.keystr(path), value))
        self._seen = {}  # position -> weakref to the last jax.Array found equal (immutable)
        self._hashes = {}  # (position, dtype) -> host hash of the value in that dtype

    def __bool__(self):
        return bool(self.items)

    def _error(self, name, shown):
        return (
            f"{self.caller}: {name} holds other integer/bool values than the ones this "
            f"derivative was built for{shown}. Index data decides the sparsity pattern, and "
            "the pattern was detected for the old values, so the derivative would be silently "
            "wrong. Build the derivative again with the new data (e.g. "
            f"sa.{self.caller}(f, x, new_index_data); setups are cached per value), or build "
            "it under jax.jit with the index argument traced, which detects a pattern valid "
            "for every value."
        )

    def check(self, args):
        """Raise for concrete leaves that differ; return the traced ones (for `guard`)."""
        leaves, treedef = jax.tree_util.tree_flatten(tuple(args))
        if treedef != self.treedef:
            return ()  # another structure: the shape check of the call says so
        traced = []
        for pos, name, value in self.items:
            leaf = leaves[pos]
            if isinstance(leaf, jax.core.Tracer):
                if leaf.shape == value.shape:  # else the shape check of the call names it
                    traced.append((pos, leaf, name, value))
                continue
            ref = self._seen.get(pos)
            if ref is not None and ref() is leaf:
                continue
            new = np.asarray(leaf)
            if new.shape != value.shape:
                continue  # the shape check of the call names it
            if not np.array_equal(new, value):
                raise ValueError(self._error(name, f" ({_first_diff(name, value, new)})"))
            if isinstance(leaf, jax.Array):
                self._seen[pos] = weakref.ref(leaf)
        return tuple(traced)

    def guard(self, out, traced):
        """``out``, raising at run time (`equinox.error_if`) if traced index data differs.

        The traced values are hashed in the graph (a 32-bit sum, one pass) and compared
        with the hash of the frozen values in the same dtype, computed here once per dtype.
        """
        for pos, leaf, name, value in traced:
            dtype = np.dtype(leaf.dtype)
            key = (pos, dtype)
            if key not in self._hashes:
                if not (np.issubdtype(dtype, np.integer) or dtype == np.bool_):
                    raise TypeError(
                        f"{self.caller}: {name} was integer/bool index data ({value.dtype}) "
                        f"when the derivative was built, but is now {dtype}."
                    )
                cast = value.astype(dtype)
                if not np.array_equal(cast, value):
                    raise ValueError(self._error(name, f" (they do not fit in {dtype})"))
                self._hashes[key] = int(_int_hash(cast, np))
            want = self._hashes[key]
            bad = _int_hash(leaf, jnp) != jnp.uint32(want)
            out = eqx.error_if(out, bad, self._error(name, ""))
        return out


def _first_diff(name, old, new) -> str:
    old, new = np.asarray(old), np.asarray(new)
    if old.ndim == 0:
        return f"{name} is {new.item()!r}, was {old.item()!r}"
    k = int(np.flatnonzero(old.ravel() != new.ravel())[0])
    idx = ", ".join(map(str, np.unravel_index(k, old.shape)))
    return f"{name}[{idx}] is {new.ravel()[k].item()!r}, was {old.ravel()[k].item()!r}"


# ---------------------------------------------------------------------------------------
# Flattening f(*args) -> 1-D, w.r.t. 1-D
# ---------------------------------------------------------------------------------------
def _weak(f):
    """A callable returning ``f`` without keeping it alive (a strong one where impossible)."""
    try:
        ref = weakref.WeakMethod(f) if isinstance(f, types.MethodType) else weakref.ref(f)
    except TypeError:
        return lambda: f
    return ref


def _describe(leaf) -> str:
    dtype = getattr(leaf, "dtype", None)
    return f"shape {tuple(np.shape(leaf))}" + (f" ({np.dtype(dtype)})" if dtype is not None else "")


class _Flat:
    """``f`` seen as a map from the raveled ``args[argnums]`` to its raveled output.

    Holds ``f`` weakly unless ``weak=False`` (the setup cache must not keep functions alive;
    every public object holds its function strongly).
    """

    def __init__(self, f, example_args, argnums, caller, weak=True):
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
        self._f = _weak(f) if weak else (lambda: f)
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
        self.arg_treedefs = tuple(jax.tree_util.tree_structure(a) for a in example_args)
        self.leaf_shapes = tuple(
            ("args" + jax.tree_util.keystr(path), tuple(np.shape(leaf)), _describe(leaf))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tuple(example_args))[0]
        )

    @property
    def f(self):
        f = self._f()
        if f is None:  # pragma: no cover - public objects keep f alive
            raise RuntimeError(f"{self.caller}: the function was garbage-collected.")
        return f

    def _select(self, args):
        return args[self.argnums[0]] if self.single else tuple(args[a] for a in self.argnums)

    def check_structure(self, args):
        """Raise when ``args`` has another structure or shape than the example arguments."""
        if len(args) != self.nargs:
            raise TypeError(
                f"Called with {len(args)} argument(s), but the derivative was built for "
                f"{self.nargs} (the example arguments)."
            )
        for i, (a, d) in enumerate(zip(args, self.arg_treedefs, strict=True)):
            if jax.tree_util.tree_structure(a) != d:
                raise TypeError(
                    f"{self.caller}: args[{i}] has the structure "
                    f"{jax.tree_util.tree_structure(a)}, but this derivative was built for "
                    f"{d}. Pass arguments shaped like the example arguments, or build a new "
                    "derivative for these."
                )
        leaves = jax.tree_util.tree_leaves(tuple(args))
        for (name, shape, built), leaf in zip(self.leaf_shapes, leaves, strict=True):
            if tuple(np.shape(leaf)) != shape:
                raise ValueError(
                    f"{self.caller}: {name} has {_describe(leaf)}, but this derivative was "
                    f"built for {built}. Its pattern and coloring are for that shape: build "
                    f"a new one for the new shape (sa.{self.caller}(f, <new arguments>); "
                    "setups are cached per shape)."
                )

    def split(self, args):
        """``(x_flat, rebuild)`` with ``rebuild(z)`` the raveled output at ``z``."""
        self.check_structure(args)
        x_flat, unravel = ravel_pytree(self._select(args))
        f = self.f

        def g(z):
            new = list(args)
            xs = unravel(z)
            if self.single:
                new[self.argnums[0]] = xs
            else:
                for a, xa in zip(self.argnums, xs, strict=True):
                    new[a] = xa
            return ravel_pytree(f(*new))[0]

        return x_flat, g


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------
# Seed matrices up to this many entries are compile-time constants: XLA then folds the
# linear tangent work that depends on the seeds alone (pads, slices, reshapes), and a call is
# faster (measured on the 2-core box, min of 100: 2-D Bratu n = 1e4, 5 colours: 80 vs 180 us;
# NONDQUAR n = 1e4: 185 vs 247 us) at no compile cost. Larger ones are built in the graph
# from the colours (an argument): folding 3e5 entries (Rosenbrock n = 1e5) made the first call
# 2.4 s instead of 0.8 s for a 1.4x faster call, and setup time is what users wait for.
_CONST_SEEDS_MAX = 1 << 17


# Larger seed matrices, up to this many entries, are made once on the host and passed to the
# compiled call as an argument (device arrays held with the index data; the products buffer
# of a call is as large). Building them in the graph from the colours cost a pass of its own:
# Rosenbrock n = 1e5, 3 colours, products 704 us built in the graph vs 481 us passed in
# (median of 60, loaded 2-core box; as a constant 560 us, and a 2.4 s first call). Beyond
# this size (e.g. with chunk_size= to bound memory) they are built in the graph.
_ARG_SEEDS_MAX = 1 << 22


def _seed_entries(coloring: ColoringResult) -> int:
    m, n = coloring.pattern.shape
    return coloring.n_forward * n + coloring.n_reverse * m


def _const_seeds(coloring: ColoringResult):
    if _seed_entries(coloring) > _CONST_SEEDS_MAX:
        return None
    return coloring.seeds()


def _argument_seeds(coloring: ColoringResult, flat, chunk_size) -> dict:
    """``{"col_seeds", "row_seeds"}`` for the index data when the seeds are neither
    constants nor built in the graph (see `_ARG_SEEDS_MAX`)."""
    k = _seed_entries(coloring)
    if k <= _CONST_SEEDS_MAX or k > _ARG_SEEDS_MAX or chunk_size is not None:
        return {}
    S, R = coloring.seeds()
    return {"col_seeds": S.astype(flat.x_dtype), "row_seeds": R.astype(flat.out_dtype)}


def _check_mesh(mesh, caller):
    if mesh is None:
        return None
    from ._sharding import check_mesh

    return check_mesh(mesh, caller)


def _mapper(mesh):
    if mesh is None:
        return None
    from ._sharding import sharded_mapper

    return sharded_mapper(mesh)


def _check_chunk(chunk_size, caller):
    if chunk_size is not None and (not isinstance(chunk_size, int | np.integer) or chunk_size < 1):
        raise ValueError(
            f"{caller}: chunk_size must be a positive int or None, got {chunk_size!r}."
        )
    return None if chunk_size is None else int(chunk_size)


def _argnums_key(argnums):
    if isinstance(argnums, list | tuple):
        return tuple(argnums)
    return argnums


class _Static:
    """Index arrays for calls: device arrays when they can be made outside a trace.

    Placed with `jax.device_put`, not `jnp.asarray`: on JAX 0.10 `jnp.asarray` of a numpy
    array runs (and so compiles) a ``stage`` executable per shape, one XLA compilation per
    index array at every setup."""

    def __init__(self, data):
        self.numpy = data
        try:
            dev = jax.device_put(data)
        except Exception:  # pragma: no cover - defensive
            dev = None
        leaves = jax.tree_util.tree_leaves(dev) if dev is not None else []
        if dev is None or any(isinstance(x, jax.core.Tracer) for x in leaves):
            dev = None  # built inside a trace: keep numpy (never cache a tracer)
        self._dev = dev

    def get(self):
        return self._dev if self._dev is not None else self.numpy


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
# The shared base
# ---------------------------------------------------------------------------------------
class _AbstractSparseDerivative(abc.ABC):
    """What a compressed Jacobian and a compressed Hessian share: the setup (flat function,
    coloring, index data, compiled calls), the frozen-index-data check, and the outputs.

    Subclasses say how the products are made (`_compressed_impl`) and are final.
    """

    _keep = None  # the user's function(s): held strongly by the public copies (`_bind`)

    def _setup(self, flat, coloring, chunk_size, mesh, frozen, index):
        self._flat = flat
        self.coloring = coloring
        self.pattern = coloring.pattern
        self.chunk_size = chunk_size
        self.mesh = mesh
        self._mapper = _mapper(mesh)
        self._frozen = frozen if frozen else None
        self._const_seeds = _const_seeds(coloring)
        if mesh is None:
            index = {**index, **_argument_seeds(coloring, flat, chunk_size)}
        self._static = _Static(index)
        self._layout = _ScipyLayout(self.pattern)
        p = self.pattern
        self._bcoo_np = np.stack([p.rows, p.cols], axis=1).astype(
            np.int32 if max(p.shape) < 2**31 - 1 else np.int64
        )
        self._lazy = {}  # shared by every copy: the device copy of the BCOO indices
        # The products go through one jitted function whose trace JAX caches (per argument
        # shapes): the mode check at build time (`_traces`), `values`, `compressed` and any
        # caller that embeds `_values_impl` in its own executable (the IPOPT setup) share a
        # single trace of f's products instead of tracing them once each.
        self._products_jit = jax.jit(self._products_impl) if mesh is None else None
        self._values_jit = jax.jit(self._values_impl)
        self._compressed_jit = jax.jit(self._compressed_impl)
        # -- issue 17 hook (owner: _sharding): with a mesh, pick colour or variable
        # sharding; the variable path replaces the two jitted calls above --
        self.sharding, self.plan = "none", None
        if mesh is not None:
            from ._sharding import attach

            attach(self)
        # -- end of hook --

    def _bind(self, keep):
        """A copy sharing the setup and compiled code, holding ``keep`` (the functions)."""
        new = copy.copy(self)
        new._keep = keep
        return new

    @abc.abstractmethod
    def _products_impl(self, index, *args):
        """The raw products at ``args`` (traced), raveled."""

    def _compressed_impl(self, index, *args):
        """`_products_impl` through its trace-cached jitted copy (see `_setup`)."""
        if self._products_jit is not None:
            return self._products_jit(index, *args)
        return self._products_impl(index, *args)

    @abc.abstractmethod
    def __repr__(self) -> str: ...

    def _seeds(self, index, which, dtype):
        c = self.coloring
        if self._const_seeds is not None:
            return jnp.asarray(self._const_seeds[0 if which == "col" else 1], dtype)
        if which + "_seeds" in index:  # made on the host, an argument of the call
            return index[which + "_seeds"].astype(dtype)
        if which == "col":
            return make_seeds(index["col_colors"], c.n_forward, dtype)
        return make_seeds(index["row_colors"], c.n_reverse, dtype)

    def _values_impl(self, index, *args):
        if self.coloring.n_colors == 0:
            self._flat.check_structure(args)
            return jnp.zeros((0,), jnp.result_type(self._flat.out_dtype, self._flat.x_dtype))
        return _decompress(self._compressed_impl(index, *args), index)

    def _run(self, fn, args):
        """``fn(index, *args)`` after checking the index data against the frozen values."""
        traced = self._frozen.check(args) if self._frozen is not None else ()
        out = fn(self._static.get(), *args)
        return self._frozen.guard(out, traced) if traced else out

    # -- properties -------------------------------------------------------------------
    @property
    def n_colors(self) -> int:
        return self.coloring.n_colors

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.shape

    @property
    def nnz(self) -> int:
        return self.pattern.nnz

    # -- evaluation -------------------------------------------------------------------
    def values(self, *args) -> jax.Array:
        """The ``nnz`` values at ``args``, in pattern order (jit-able)."""
        return self._run(self._values_jit, args)

    def compressed(self, *args) -> jax.Array:
        """The raw products: forward ``(n_forward, m)`` then reverse ``(n_reverse, n)`` (for
        Hessians the HVPs ``(n_colors, n)``), raveled."""
        return self._run(self._compressed_jit, args)

    def __call__(self, *args) -> jsparse.BCOO:
        """The matrix at ``args`` as a BCOO matrix on ``pattern`` (``.todense()`` works)."""
        v = self.values(*args)
        if isinstance(v, jax.core.Tracer):
            idx = self._bcoo_np  # a constant of this trace
        else:
            idx = self._lazy.get("bcoo")
            if idx is None:
                idx = self._lazy["bcoo"] = jnp.asarray(self._bcoo_np)
        return jsparse.BCOO(
            (v, idx), shape=self.pattern.shape, indices_sorted=True, unique_indices=True
        )

    def todense(self, *args) -> jax.Array:
        """The matrix at ``args`` as a dense array (for checks and small problems)."""
        v = self.values(*args)
        p = self.pattern
        return jnp.zeros(p.shape, v.dtype).at[p.rows, p.cols].set(v)

    # -- pictures ---------------------------------------------------------------------
    def __str__(self) -> str:
        return repr(self) + "\n" + text_spy(self.pattern, labels=self.coloring.entry_colors())

    def spy(self, ax=None, **kwargs):
        """Matplotlib picture of the pattern colored by product."""
        return self.coloring.spy(ax=ax, **kwargs)


# ---------------------------------------------------------------------------------------
# Jacobians
# ---------------------------------------------------------------------------------------
class SparseJacobian(_AbstractSparseDerivative):
    """A compressed sparse Jacobian of ``f`` on a fixed pattern; see [`sparse_jacobian`][].

    Attributes:
        pattern: the ``(m, n)`` [`SparsityPattern`][].
        coloring: the [`ColoringResult`][].
        mode: ``"forward"``, ``"reverse"`` or ``"bidirectional"``.
        n_colors: products per call (``jvp_count + vjp_count``).
        chunk_size: products per batch (``None``: all in one batch).
        mesh: the `jax.sharding.Mesh` the products are split over (``None``: one device).
    """

    def __init__(self, flat: _Flat, coloring: ColoringResult, chunk_size=None, mesh=None,
                 frozen: _Frozen | None = None):
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
        self._setup(flat, coloring, chunk_size, mesh, frozen, _index_data(coloring))

    @property
    def mode(self) -> str:
        return self.coloring.mode

    @property
    def jvp_count(self) -> int:
        return self.coloring.n_forward

    @property
    def vjp_count(self) -> int:
        return self.coloring.n_reverse

    def _products_impl(self, index, *args):
        x, g = self._flat.split(args)
        c = self.coloring
        parts = []
        if c.n_forward:
            s = self._seeds(index, "col", x.dtype)
            parts.append(jvps(g, x, s, self.chunk_size, self._mapper).reshape(-1))
        if c.n_reverse:
            s = self._seeds(index, "row", self._flat.out_dtype)
            parts.append(vjps(g, x, s, self.chunk_size, self._mapper).reshape(-1))
        if not parts:
            return jnp.zeros((0,), self._flat.out_dtype)
        return jnp.concatenate(parts) if len(parts) > 1 else parts[0]

    def to_scipy(self, values, format: str = "csr"):
        """A scipy sparse array from ``values`` (pattern order), without sorting.

        The CSR index arrays are precomputed (pattern order is CSR order); ``"csc"`` uses a
        precomputed permutation, ``"coo"`` the pattern's rows/cols.
        """
        return self._layout.build(values, format)

    def __repr__(self) -> str:
        m, n = self.pattern.shape
        c = self.coloring
        k = (f"{c.n_forward} JVPs + {c.n_reverse} VJPs" if c.mode == "bidirectional"
             else f"{c.n_colors} colors")
        return f"SparseJacobian({m}×{n}, nnz={self.pattern.nnz}, {c.mode}, {k})"


def _lazy_detection(name):
    try:
        from . import _detection
    except ImportError as e:  # pragma: no cover - until detection lands
        raise ImportError(
            f"Sparsity detection ({name}) is not available in this build; pass pattern= "
            "(a SparsityPattern) explicitly."
        ) from e
    return getattr(_detection, name)


def _check_pattern_arg(pattern, caller):
    if pattern is not None and not isinstance(pattern, SparsityPattern):
        raise TypeError(
            f"{caller}: pattern must be a SparsityPattern, got {type(pattern).__name__}."
        )


def _check_coloring_arg(coloring, caller):
    if coloring is not None and not isinstance(coloring, ColoringResult):
        raise TypeError(
            f"{caller}: coloring must be a ColoringResult, got {type(coloring).__name__}."
        )


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

    Setup is paid once: calling `sparse_jacobian` again with the same function object,
    argument shapes and dtypes, integer argument values and options returns a derivative
    that shares the detection, the coloring and the compiled code (see `sa.cache_info`;
    `sa.set_cache_size(0)` opts out).

    Integer/bool arguments are index data: when the pattern is detected here, their example
    values are part of it, and a call with other values raises a `ValueError` (built under
    `jax.jit` with traced index arguments, the pattern holds for every value instead).

    Args:
        f: a JAX-traceable function.
        *example_args: arguments to find shapes and the pattern (arrays or
            ``jax.ShapeDtypeStruct`` when ``pattern`` is given).
        argnums: which argument(s) to differentiate, as in `jax.jacfwd`.
        mode: ``"forward"`` (JVPs), ``"reverse"`` (VJPs), ``"bidirectional"`` or ``"auto"``
            (fewest products; see [`color_jacobian`][]).
        order: vertex order for coloring (default ``"best"``).
        pattern: the Jacobian pattern; detected with `jacobian_sparsity` when ``None``. A
            pattern you pass is trusted for every value of the index arguments.
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
    chunk_size = _check_chunk(chunk_size, "sparse_jacobian")
    mesh = _check_mesh(mesh, "sparse_jacobian")
    _check_pattern_arg(pattern, "sparse_jacobian")
    _check_coloring_arg(coloring, "sparse_jacobian")
    key = (structure_key(example_args), _argnums_key(argnums), mode, order, pattern,
           chunk_size, coloring, mesh)

    def build():
        return _build_jacobian(f, example_args, argnums, mode, order, pattern, chunk_size,
                               coloring, mesh)

    return cached("sparse_jacobian", (f,), key, build)._bind(f)


def _build_jacobian(f, example_args, argnums, mode, order, pattern, chunk_size, coloring,
                    mesh) -> SparseJacobian:
    flat = _Flat(f, example_args, argnums, "sparse_jacobian")
    frozen = None
    if coloring is None:
        if pattern is None:
            pattern = _lazy_detection("jacobian_sparsity")(f, *example_args, argnums=argnums)
            frozen = _Frozen(example_args, "sparse_jacobian")
        if pattern.shape != (flat.m, flat.n):
            raise ValueError(
                f"sparse_jacobian: pattern has shape {pattern.shape}, but f maps {flat.n} "
                f"inputs to {flat.m} outputs, so the Jacobian is {(flat.m, flat.n)}."
            )
        coloring = color_jacobian(pattern, mode=mode, order=order)
        if mode == "auto":
            jac = SparseJacobian(flat, coloring, chunk_size, mesh, frozen)
            if _traces(jac, example_args):
                return jac
            # e.g. while_loop (no reverse mode) or custom_vjp (no forward mode): use the
            # other direction, if JAX can do it
            for other in ("forward", "reverse"):
                alt = SparseJacobian(
                    flat, color_jacobian(pattern, mode=other, order=order, warn=False),
                    chunk_size, mesh, frozen,
                )
                if _traces(alt, example_args):
                    return alt
            return jac  # let the call raise JAX's own error
    return SparseJacobian(flat, coloring, chunk_size, mesh, frozen)


def _traces(obj: _AbstractSparseDerivative, example_args) -> bool:
    """Whether JAX can trace the products of ``obj`` (checked abstractly, no compile; the
    trace is cached for the call's compilation)."""
    try:
        jax.eval_shape(obj._compressed_impl, obj._static.numpy, *example_args)
    except (TypeError, ValueError, NotImplementedError):
        return False
    return True


# ---------------------------------------------------------------------------------------
# Hessians
# ---------------------------------------------------------------------------------------
class SparseHessian(_AbstractSparseDerivative):
    """A compressed sparse Hessian of a scalar ``f``; see [`sparse_hessian`][].

    Attributes:
        pattern: the full symmetric ``(n, n)`` [`SparsityPattern`][].
        lower_pattern: ``pattern.lower()`` (the order of `lower_values`, as IPOPT wants).
        coloring: the [`ColoringResult`][] (``"star"`` or ``"acyclic"``).
        n_colors: Hessian-vector products per call.
        mode: the HVP mode (``"fwd_over_rev"``, ``"rev_over_rev"`` or ``"rev_over_fwd"``).
        mesh: the `jax.sharding.Mesh` the products are split over (``None``: one device).
    """

    def __init__(self, flat: _Flat, coloring: ColoringResult, chunk_size=None, mesh=None,
                 hvp_mode: str = "fwd_over_rev", frozen: _Frozen | None = None):
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
        if hvp_mode not in HVP_MODES:
            raise ValueError(f"HVP mode must be one of {HVP_MODES}, got {hvp_mode!r}.")
        self.hvp_mode = hvp_mode
        pattern = coloring.pattern
        self.lower_pattern = pattern.lower()
        self._lower_pos = pattern.positions(self.lower_pattern.rows, self.lower_pattern.cols)
        index = _index_data(coloring)
        # lower values straight from the products: one gather, one compiled call
        index["lower_gather"] = _small(np.asarray(coloring.gather)[self._lower_pos])
        self._setup(flat, coloring, chunk_size, mesh, frozen, index)
        self._layout_lower = _ScipyLayout(self.lower_pattern)
        self._lower_jit = jax.jit(self._lower_impl)

    @property
    def mode(self) -> str:
        return self.hvp_mode

    @property
    def hvp_count(self) -> int:
        return self.coloring.n_colors

    @property
    def method(self) -> str:
        return self.coloring.mode

    def _products_impl(self, index, *args):
        x, g = self._flat.split(args)
        s = self._seeds(index, "col", x.dtype)
        return hvps(g, x, s, self.hvp_mode, self.chunk_size, self._mapper).reshape(-1)

    def _lower_impl(self, index, *args):
        if self.coloring.n_colors == 0:
            self._flat.check_structure(args)
            return jnp.zeros((0,), self._flat.x_dtype)
        return _decompress(self._compressed_impl(index, *args), index, "lower_gather")

    def lower_values(self, *args) -> jax.Array:
        """The values of the lower triangle in ``lower_pattern`` order (IPOPT's order)."""
        if self.plan is not None:  # sharded along the variables: a gather of the values
            return self.values(*args)[self._lower_pos]
        return self._run(self._lower_jit, args)

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


def _check_hvp_mode(mode, caller):
    if mode != "auto" and mode not in HVP_MODES:
        raise ValueError(
            f"{caller}: mode must be 'auto' or one of {HVP_MODES} (how Hessian-vector "
            f"products are taken), got {mode!r}. For the coloring method use method=."
        )


def _hessian_for_mode(flat: _Flat, coloring, chunk_size, mesh, mode: str, frozen,
                      example_args) -> SparseHessian:
    """The `SparseHessian` in HVP ``mode``; for ``"auto"`` in the first of `HVP_MODES` JAX can
    differentiate ``f`` in (a `jax.custom_vjp` objective has no forward mode:
    reverse-over-reverse). The check traces the very products a call runs (abstractly, no
    compile), and that trace is cached and reused by the call's own compilation."""
    if mode != "auto":
        return SparseHessian(flat, coloring, chunk_size, mesh, mode, frozen)
    first = None
    for m in HVP_MODES:
        hess = SparseHessian(flat, coloring, chunk_size, mesh, m, frozen)
        if coloring.n_colors == 0:
            return hess
        first = first or hess
        if _traces(hess, example_args):
            return hess
    return first  # let the call raise JAX's own error


def sparse_hessian(
    f,
    *example_args,
    argnums=0,
    method: str = "auto",
    mode: str = "auto",
    order="best",
    pattern: SparsityPattern | None = None,
    chunk_size: int | None = None,
    coloring: ColoringResult | None = None,
    mesh=None,
) -> SparseHessian:
    """A sparse Hessian of a scalar ``f`` from colored Hessian-vector products.

    One vmapped batch of HVPs per call. Setup (detection, coloring, compiled code) is
    cached as for [`sparse_jacobian`][], and integer arguments are index data in the same way.

    Args:
        f: a JAX-traceable scalar function.
        *example_args: arguments to find shapes and the pattern.
        argnums: which argument(s) to differentiate (raveled together).
        method: ``"star"`` (direct), ``"acyclic"`` (substitution) or ``"auto"``
            (see [`color_hessian`][]).
        mode: how HVPs are taken: ``"fwd_over_rev"`` (`jax.jvp` of `jax.grad`),
            ``"rev_over_fwd"``, ``"rev_over_rev"`` (reverse mode only, e.g. for a
            `jax.custom_vjp` objective) or ``"auto"`` (the first of those JAX can do, in the
            order fwd_over_rev, rev_over_rev, rev_over_fwd).
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
        >>> hess.method, hess.n_colors, hess.mode
        ('star', 3, 'fwd_over_rev')
        >>> bool(jnp.allclose(hess(jnp.arange(6.0)).todense(), jax.hessian(f)(jnp.arange(6.0))))
        True
    """
    chunk_size = _check_chunk(chunk_size, "sparse_hessian")
    mesh = _check_mesh(mesh, "sparse_hessian")
    _check_pattern_arg(pattern, "sparse_hessian")
    _check_coloring_arg(coloring, "sparse_hessian")
    _check_hvp_mode(mode, "sparse_hessian")
    key = (structure_key(example_args), _argnums_key(argnums), method, mode, order, pattern,
           chunk_size, coloring, mesh)

    def build():
        return _build_hessian(f, example_args, argnums, method, mode, order, pattern,
                              chunk_size, coloring, mesh)

    return cached("sparse_hessian", (f,), key, build)._bind(f)


def _build_hessian(f, example_args, argnums, method, mode, order, pattern, chunk_size,
                   coloring, mesh, *, weak=True, caller="sparse_hessian",
                   detected=False) -> SparseHessian:
    flat = _Flat(f, example_args, argnums, caller, weak=weak)
    if flat.m != 1:
        raise ValueError(
            f"{caller} needs a scalar-valued f, but f returns {flat.m} values. For a "
            "vector function use sparse_jacobian."
        )
    frozen = _Frozen(example_args, caller) if detected else None
    if coloring is None:
        if pattern is None:
            pattern = _lazy_detection("hessian_sparsity")(f, *example_args, argnums=argnums)
            frozen = _Frozen(example_args, caller)
        if pattern.shape != (flat.n, flat.n):
            raise ValueError(
                f"{caller}: pattern has shape {pattern.shape}, but f has {flat.n} inputs."
            )
        coloring = color_hessian(pattern, method=method, order=order)
    return _hessian_for_mode(flat, coloring, chunk_size, mesh, mode, frozen, example_args)


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

    _keep = None  # the user's functions: held strongly by the public copies (`_bind`)

    def __init__(self, hessian: SparseHessian, n_constraints: int):
        self.hessian = hessian
        self.pattern = hessian.pattern
        self.lower_pattern = hessian.lower_pattern
        self.n_constraints = n_constraints

    def _bind(self, keep):
        new = copy.copy(self)
        new._keep = keep
        new.hessian = self.hessian._bind(keep)
        return new

    @property
    def n_colors(self) -> int:
        return self.hessian.n_colors

    @property
    def coloring(self) -> ColoringResult:
        return self.hessian.coloring

    @property
    def mode(self) -> str:
        return self.hessian.mode

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
    mode: str = "auto",
    order="best",
    pattern: SparsityPattern | None = None,
    chunk_size: int | None = None,
    mesh=None,
    coloring: ColoringResult | None = None,
) -> SparseLagrangianHessian:
    """The Hessian of the Lagrangian ``σ f(x) + λᵀ c(x)`` with ``σ``, ``λ`` given per call.

    Setup is cached per ``(f, c)`` as for [`sparse_hessian`][].

    Args:
        f: objective ``f(x, *args) -> scalar``.
        c: constraints ``c(x, *args) -> array`` (any shape, raveled), or ``None``.
        *example_args: ``(x0, *args)``; ``x0`` is the variable (a pytree is raveled).
        method, mode, order, chunk_size, mesh: as in [`sparse_hessian`][].
        pattern: the union Hessian pattern; detected when ``None`` (the union of the
            patterns of ``f`` and of ``sum(c)``).
        coloring: a precomputed symmetric [`ColoringResult`][] of that pattern; overrides
            ``pattern``, ``method`` and ``order`` (a caller that already coloured the pattern,
            e.g. to choose star vs acyclic, does not colour it twice).

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
    caller = "sparse_lagrangian_hessian"
    chunk_size = _check_chunk(chunk_size, caller)
    mesh = _check_mesh(mesh, caller)
    _check_pattern_arg(pattern, caller)
    _check_hvp_mode(mode, caller)
    _check_coloring_arg(coloring, caller)
    if coloring is not None:
        pattern = coloring.pattern
    fns = (f,) if c is None else (f, c)
    key = (structure_key(example_args), c is None, method, mode, order, pattern, chunk_size,
           mesh, coloring)

    def build():
        return _build_lagrangian(f, c, example_args, method, mode, order, pattern,
                                 chunk_size, mesh, coloring)

    return cached(caller, fns, key, build)._bind(fns)


def _build_lagrangian(f, c, example_args, method, mode, order, pattern, chunk_size, mesh,
                      coloring=None):
    x0, rest = example_args[0], example_args[1:]
    f_ref = _weak(f)
    c_ref = None if c is None else _weak(c)
    m = 0 if c is None else int(
        jax.eval_shape(lambda *a: ravel_pytree(c(*a))[0], *example_args).shape[0]
    )

    def lagrangian(x, sigma, lam, *a):  # holds f and c weakly (the cache must not keep them)
        val = sigma * f_ref()(x, *a)
        if m:
            val = val + jnp.dot(jnp.reshape(lam, (-1,)), ravel_pytree(c_ref()(x, *a))[0])
        return val

    detected = pattern is None
    if detected:
        hs = _lazy_detection("hessian_sparsity")
        pattern = hs(f, *example_args)
        if m:
            pattern = pattern.union(hs(lambda *a: jnp.sum(ravel_pytree(c(*a))[0]),
                                       *example_args))
    x_dtype = jax.eval_shape(lambda t: ravel_pytree(t)[0], x0).dtype
    lam0 = jax.ShapeDtypeStruct((m,), x_dtype)
    sigma0 = jax.ShapeDtypeStruct((), x_dtype)
    hess = _build_hessian(
        lagrangian, (x0, sigma0, lam0, *rest), 0, method, mode, order, pattern, chunk_size,
        coloring, mesh, weak=False, caller="sparse_lagrangian_hessian", detected=detected,
    )
    return SparseLagrangianHessian(hess, m)
