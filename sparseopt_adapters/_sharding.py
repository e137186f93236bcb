"""Compressed derivatives on a `jax.sharding.Mesh`: split the colours, or split the variables.

With ``mesh=``, [`sparse_jacobian`][sparseopt_adapters.sparse_jacobian],
[`sparse_hessian`][sparseopt_adapters.sparse_hessian] and
[`sparse_lagrangian_hessian`][sparseopt_adapters.sparse_lagrangian_hessian] run on every device
of the mesh in one of two ways, picked by [`choose_sharding`][] (the one rule, below):

**Colour axis** (``"colors"``). The ``c`` products (one JVP, VJP or HVP per colour) are
independent, so the seed batch is split along its leading axis with `jax.shard_map`: every
device runs the same vmapped product on its own block of seeds, with the primal point (and, for
VJPs, the linearization) replicated. The seeds are padded with zero rows up to a multiple of
the number of devices (a zero seed gives a zero product), device ``d`` gets the contiguous
block ``d``, the padding is sliced off, and decompression is the single-device gather.
Chunking composes: each device maps over its block in chunks of ``ceil(chunk_size / D)``.
Per device: ``ceil(c / D)`` products plus the whole primal working set.

**Variable axis** (``"variables"``). ``x`` (the raveled ``args[argnums]``) is split into ``D``
contiguous blocks; the user's function runs SPMD under `jax.jit` (XLA's partitioner inserts
the halo exchanges a stencil needs), the seed matrices are sharded along ``n`` (each device
builds the columns of its own block from its block of the colours), and every product is
sharded along its length (``m`` for a JVP, ``n`` for a VJP or HVP). Decompression is then
local: the nonzeros, in pattern order, are split into ``D`` equal blocks, and block ``d``
reads the products of its own block plus a *halo* of ``h_left`` / ``h_right`` positions from
its two neighbours (one `jax.lax.ppermute` each way; the halo widths are computed once from
the pattern). A banded or stencil pattern needs a halo of a few rows. Per device: ``1/D`` of
``x``, of the products, of the index data and of the values, plus the halos.

The documented gather: where one neighbour's block is not enough (a pattern whose nonzeros of a
block of rows reach far-away products, or an acyclic Hessian colouring, whose substitution
walks trees across the whole matrix), the products are gathered (all-gathered: every device
holds all ``c`` products) and decompressed by the single-device code; the values are still
returned sharded. ``plan.local`` says which case an object is in.

The values come back as a ``(nnz,)`` `jax.Array` sharded over the mesh when ``D`` divides
``nnz`` (JAX cannot place an array whose length the devices do not divide; the values are then
returned replicated, and `padded_values` gives the ``(D·ceil(nnz/D),)`` sharded array, zeros
after ``nnz``). Inside the user's own `jax.jit` the length does not matter.

Values: the same products as on one device (XLA partitions elementwise and stencil code
without changing its arithmetic), so the values equal the single-device ones to the last bit
or, where XLA fuses differently, 1 ulp (the tests check ``<= 1 ulp``).

The rule ([`choose_sharding`][]), with ``D`` devices, ``c`` colours and ``n`` variables:

1. the mesh's only axis is named ``"colors"`` ([`color_mesh`][]) or ``"variables"``
   ([`variable_mesh`][]): that axis, as asked (variables need ``D | n``; on one device
   the variable path is the colour-at-a-time loop, colours are nothing to split).
2. ``D == 1``: nothing to split.
3. ``c >= COLORS_PER_DEVICE * D`` (at least 4 products per device): colours -- the primal is
   replicated but paid once per 4+ products, no halo traffic inside the user's function,
   and the padding wastes at most a quarter of a step.
4. ``n`` not divisible by ``D``, or ``n < MIN_VARIABLES_PER_DEVICE * D`` (2^14 variables per
   device: below that the halo exchanges cost more than the split saves): colours.
5. otherwise: variables (few colours on many variables: the stencil and banded problems
   whose memory the colour axis cannot divide).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._products import decompress_index, hvp_fun, jvp_fun, map_seeds, vjp_fun
from ._products import seeds as make_seeds

__all__ = [
    "COLOR_AXIS",
    "VARIABLE_AXIS",
    "check_mesh",
    "choose_sharding",
    "constrain_vector",
    "color_mesh",
    "map_seeds_sharded",
    "padded_values",
    "placement",
    "seed_sharding",
    "shard_variables",
    "sharded_products",
    "solver_sharding",
    "to_host",
    "variable_mesh",
]

#: Name of the axis of the 1-D mesh built by [`color_mesh`][] (forces colour sharding).
COLOR_AXIS = "colors"
#: Name of the axis of the 1-D mesh built by [`variable_mesh`][] (forces variable sharding).
VARIABLE_AXIS = "variables"
#: Name of the axis of a mesh built from a list of devices (the rule decides).
DEVICE_AXIS = "devices"
#: Rule 3 of [`choose_sharding`][]: colours once every device gets this many products.
COLORS_PER_DEVICE = 4
#: Rule 4 of [`choose_sharding`][]: variables only with at least this many per device.
MIN_VARIABLES_PER_DEVICE = 1 << 14


# ---------------------------------------------------------------------------------------
# Meshes and the rule
# ---------------------------------------------------------------------------------------
def _mesh(devices, axis, caller) -> Mesh:
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError(f"{caller}: no devices given.")
    return Mesh(np.array(devs, dtype=object), (axis,))


def color_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all of `jax.devices()`), axis ``"colors"``.

    Derivatives built with it split their colour batch (never the variables).

    Args:
        devices: the devices to spread the color batch over; in a multi-host run
            (after `jax.distributed.initialize`) `jax.devices()` lists every host's devices.

    Returns:
        A `jax.sharding.Mesh` with one axis named ``"colors"``.

    Example:
        >>> import jax
        >>> from sparseopt_adapters._sharding import color_mesh
        >>> color_mesh(jax.devices()[:1]).shape
        OrderedDict([('colors', 1)])
    """
    return _mesh(devices, COLOR_AXIS, "color_mesh")


def variable_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all of `jax.devices()`), axis ``"variables"``.

    Derivatives built with it split ``x``, the seeds, the products and the values along the
    variables (the number of devices must divide ``n``).

    Args:
        devices: the devices; in a multi-process run `jax.devices()` lists every process's.

    Returns:
        A `jax.sharding.Mesh` with one axis named ``"variables"``.

    Example:
        >>> import jax
        >>> from sparseopt_adapters._sharding import variable_mesh
        >>> variable_mesh(jax.devices()[:1]).axis_names
        ('variables',)
    """
    return _mesh(devices, VARIABLE_AXIS, "variable_mesh")


def check_mesh(mesh, caller: str = "sparse_jacobian") -> Mesh | None:
    """Normalize the ``mesh=`` keyword: ``None``, a `Mesh`, or a sequence of devices.

    Args:
        mesh: ``None`` (single device), a `jax.sharding.Mesh` (split over all its axes
            together), or a sequence of devices (a 1-D mesh, axis ``"devices"``: the rule of
            [`choose_sharding`][] decides how to split).
        caller: the public function, for error messages.

    Returns:
        ``None`` or a `Mesh`.
    """
    if mesh is None or isinstance(mesh, Mesh):
        return mesh
    if isinstance(mesh, Sequence) and all(isinstance(d, jax.Device) for d in mesh):
        return _mesh(mesh, DEVICE_AXIS, caller)
    raise TypeError(
        f"{caller}: mesh must be a jax.sharding.Mesh, a sequence of jax devices or None, got "
        f"{type(mesh).__name__}."
    )


def choose_sharding(n_colors: int, n_devices: int, n: int, axis_names=()) -> str:
    """The one rule: ``"none"``, ``"colors"`` or ``"variables"`` (see the module notes).

    Args:
        n_colors: products per call.
        n_devices: devices in the mesh.
        n: variables (length of the raveled ``x``).
        axis_names: the mesh's axis names; a single ``"colors"`` or ``"variables"`` axis
            forces that choice.

    Returns:
        How the derivative is split.

    Example:
        >>> from sparseopt_adapters._sharding import choose_sharding
        >>> choose_sharding(5, 4, 10**6), choose_sharding(40, 4, 10**6), choose_sharding(5, 4, 99)
        ('variables', 'colors', 'colors')
    """
    names = tuple(axis_names)
    if names == (COLOR_AXIS,):
        return "colors" if n_devices > 1 else "none"
    if names == (VARIABLE_AXIS,):  # also on one device: the colour-at-a-time loop
        if n % n_devices:
            raise ValueError(
                f"A variable mesh of {n_devices} devices needs n divisible by {n_devices}, but "
                f"n = {n}. Pad the variables, use fewer devices, or pass color_mesh() to "
                "split the colours instead."
            )
        return "variables"
    if n_devices == 1:
        return "none"
    if n_colors >= COLORS_PER_DEVICE * n_devices:
        return "colors"
    if n % n_devices or n < MIN_VARIABLES_PER_DEVICE * n_devices:
        return "colors"
    return "variables"


def solver_sharding(mesh, n: int, caller: str = "solver") -> NamedSharding | None:
    """How a solver given ``mesh=`` places its flat ``n``-vectors (``x``, steps, CG/LSMR
    vectors): split in contiguous blocks over every mesh axis, or ``None`` (replicated).

    The same rule as [`choose_sharding`][] with no colours to count (a matrix-free solve has
    none): split along the variables on a [`variable_mesh`][], or on any other mesh when
    ``D | n`` and ``n >= MIN_VARIABLES_PER_DEVICE * D``; replicated on a [`color_mesh`][],
    on one device, or when ``n`` is too short or not divisible (then only the derivative
    products are split, by the colour axis). A variable mesh whose size does not divide
    ``n`` is refused, as by the derivatives.

    Args:
        mesh: ``None``, a `jax.sharding.Mesh` or a sequence of devices.
        n: length of the flat parameter vector.
        caller: the public name, for error messages.

    Returns:
        A `NamedSharding` (``PartitionSpec`` over the mesh axes) or ``None``.

    Example:
        >>> import jax
        >>> from sparseopt_adapters._sharding import solver_sharding, variable_mesh
        >>> solver_sharding(variable_mesh(jax.devices()[:1]), 8).spec[0]
        'variables'
    """
    mesh = check_mesh(mesh, caller)
    if mesh is None:
        return None
    how = choose_sharding(0, int(mesh.size), int(n), mesh.axis_names)
    return NamedSharding(mesh, _spec(mesh)) if how == "variables" else None


def constrain_vector(v, sharding: NamedSharding | None):
    """``v`` constrained to ``sharding`` (from [`solver_sharding`][]); unchanged for ``None``.

    Under `jax.jit` a sharding constraint (XLA's partitioner then keeps what is computed
    from ``v`` split); outside, ``v`` placed on the mesh (a global array, also across
    processes when every process passes the same value).
    """
    if sharding is None:
        return v
    if isinstance(v, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(v, sharding)
    if isinstance(v, jax.Array) and v.sharding.is_equivalent_to(sharding, v.ndim):
        return v
    if isinstance(v, jax.Array) and not v.is_fully_addressable:
        return jax.jit(lambda a: a, out_shardings=sharding)(v)
    return _global_array(np.asarray(v), sharding)


def placement(mesh, n: int, caller: str):
    """``(mesh, place)`` for an adapter given ``mesh=``: the normalized mesh (``None``,
    hashable: part of a setup-cache key) and ``place(x)``, which puts a flat ``n``-vector
    from the host solver on the mesh as [`solver_sharding`][] says (identity without one).

    Example:
        >>> import numpy as np
        >>> from sparseopt_adapters._sharding import placement
        >>> mesh, place = placement(None, 3, "demo")
        >>> mesh, place(np.ones(3)).shape
        (None, (3,))
    """
    mesh = check_mesh(mesh, caller)
    sharding = solver_sharding(mesh, n, caller)
    if sharding is None:
        return mesh, lambda x: x
    return mesh, lambda x: constrain_vector(x, sharding)


def to_host(a) -> np.ndarray:
    """``a`` as one numpy array on this process (a global array is gathered from every
    process: each process of a multi-process run gets the whole value).

    Example:
        >>> import numpy as np
        >>> from sparseopt_adapters._sharding import to_host
        >>> to_host(np.arange(3.0))
        array([0., 1., 2.])
    """
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))
    return np.asarray(a)


def _spec(mesh: Mesh) -> PartitionSpec:
    names = tuple(mesh.axis_names)
    return PartitionSpec(names[0] if len(names) == 1 else names)


def _axis(mesh: Mesh):
    names = tuple(mesh.axis_names)
    return names[0] if len(names) == 1 else names


def seed_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a seed (or product) batch: leading axis over every mesh axis."""
    return NamedSharding(mesh, _spec(mesh))


def shard_variables(x, mesh: Mesh):
    """``x`` placed on ``mesh`` in contiguous blocks of its leading axis (what the variable
    path expects; also works across processes, where every process passes the same ``x``).

    Args:
        x: an array whose leading axis the mesh size divides (or a pytree of them).
        mesh: the `jax.sharding.Mesh`.

    Returns:
        A global `jax.Array` (a pytree of them), sharded along the leading axis.

    Example:
        >>> import jax, numpy as np
        >>> from sparseopt_adapters._sharding import shard_variables, variable_mesh
        >>> shard_variables(np.arange(4.0), variable_mesh(jax.devices()[:1])).shape
        (4,)
    """

    def put(a):
        a = np.asarray(a)
        spec = PartitionSpec(_axis(mesh), *([None] * (a.ndim - 1))) if a.ndim else PartitionSpec()
        return _global_array(a, NamedSharding(mesh, spec))

    return jax.tree_util.tree_map(put, x)


def _global_array(a: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from the same numpy value on every process."""
    return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])


# ---------------------------------------------------------------------------------------
# Colour axis
# ---------------------------------------------------------------------------------------
def map_seeds_sharded(fun, seeds, chunk_size, mesh: Mesh, *, keep_padding: bool = False):
    """``vmap(fun)(seeds)`` with the seed batch split over ``mesh`` (see the module notes).

    Args:
        fun: one product, ``seed -> product`` (closes over the primal point; the closure is
            replicated on every device).
        seeds: the ``(c, n)`` (or ``(c, m)``) seed matrix.
        chunk_size: products per step of the whole mesh (each device then runs chunks of
            ``ceil(chunk_size / devices)``), or ``None`` for one vmap per device.
        mesh: the `jax.sharding.Mesh`.
        keep_padding: return the padded ``(c_pad, ...)`` batch, sharded over the mesh (for
            inspection); by default the ``c`` products in color order.

    Returns:
        The products, ``(c, ...)`` in seed order (``(c_pad, ...)`` with ``keep_padding``).
    """
    n_dev = int(mesh.size)
    c = seeds.shape[0]
    c_pad = -(-c // n_dev) * n_dev
    if c_pad != c:
        zeros = jnp.zeros((c_pad - c,) + seeds.shape[1:], seeds.dtype)
        seeds = jnp.concatenate([seeds, zeros])
    local_chunk = None if chunk_size is None else max(1, -(-int(chunk_size) // n_dev))
    spec = _spec(mesh)
    seeds = jax.lax.with_sharding_constraint(seeds, NamedSharding(mesh, spec))
    out = jax.shard_map(
        lambda s: _local_map(fun, s, local_chunk), mesh=mesh, in_specs=spec, out_specs=spec,
        # the closure (primal point, linearization) is replicated; the products of a
        # device depend on its own seeds only, which is all out_specs=spec claims
        check_vma=False,
    )(seeds)
    return out if keep_padding or c_pad == c else out[:c]


def _local_map(fun, seeds, chunk):
    return map_seeds(fun, seeds, chunk)  # the single-device map


def _seeds(colors, k, dtype):
    return make_seeds(colors, k, dtype)


# ---------------------------------------------------------------------------------------
# Variable axis
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Part:
    """One kind of product of a call: ``count`` products of length ``length``."""

    count: int
    length: int
    block: int  # ceil(length / D): each device's positions
    left: int  # halo taken from the left neighbour's last positions
    right: int  # halo taken from the right neighbour's first positions

    @property
    def width(self) -> int:
        return self.left + self.block + self.right


class VariablePlan:
    """How a derivative object runs split along the variables (built once, host side).

    Attributes:
        mesh: the mesh.
        devices: ``D``.
        local: ``True`` when decompression is local (halos only), ``False`` when the products
            are gathered first (the documented gather).
        parts: per product kind, its count, length and halo widths.
        block: nonzeros per device, ``ceil(nnz / D)``.
    """

    def __init__(self, obj):
        self.obj = obj
        self.mesh = obj.mesh
        self.devices = D = int(obj.mesh.size)
        self.hessian = obj.coloring.mode in ("star", "acyclic")
        flat, col = obj._flat, obj.coloring
        m, n = flat.m, flat.n
        self.n, self.m, self.nnz = n, m, int(obj.pattern.nnz)
        if self.hessian:
            kinds = [("hvp", col.n_colors, n)]
        else:
            kinds = [(k, c, ln) for k, c, ln in (("jvp", col.n_forward, m),
                                                 ("vjp", col.n_reverse, n)) if c]
        self.kinds = [k for k, _, _ in kinds]
        self.block = -(-self.nnz // D) if self.nnz else 1
        # decode every nonzero into (part, colour, position along the product); an acyclic
        # colouring's substitution reads values beyond the products: no local plan
        self.local = col.substitution is None
        gather = np.asarray(col.gather, np.int64) if self.local else np.zeros(0, np.int64)
        starts = np.cumsum([0] + [c * ln for _, c, ln in kinds])
        part = np.searchsorted(starts, gather, side="right") - 1
        parts = []
        lengths = np.array([ln for _, _, ln in kinds], np.int64)
        rel = gather - starts[part]
        colour, pos = rel // lengths[part], rel % lengths[part]
        dev = np.arange(gather.size) // self.block
        for p, (_, c, ln) in enumerate(kinds):
            b = -(-ln // D)
            sel = part == p
            lo = dev[sel] * b
            left = int(max(0, (lo - pos[sel]).max(initial=0)))
            right = int(max(0, (pos[sel] - (lo + b - 1)).max(initial=0)))
            if left > b or right > b:
                self.local = False
            parts.append(_Part(c, ln, b, min(left, b), min(right, b)))
        self.parts = tuple(parts)
        if self.local:
            offsets = np.cumsum([0] + [q.count * q.width for q in parts])
            idx = np.full(D * self.block, -1, np.int64)  # -1: padding, read by no colour
            for p, q in enumerate(parts):
                sel = np.flatnonzero(part == p)
                local_pos = pos[sel] - dev[sel] * q.block + q.left
                idx[sel] = offsets[p] + colour[sel] * q.width + local_pos
            size = int(offsets[-1])
            self._index_np = idx.astype(np.int32 if size < 2**31 - 1 else np.int64)
        else:
            self._index_np = None
        # colours padded with -1 (in no seed) to a multiple of D, to be sharded, in the
        # smallest integer type (int8 below 128 colours: a quarter of the resident bytes)
        def pad(c):
            c = np.asarray(c)
            top = int(c.max(initial=0)) + 1
            dtype = next(t for t in (np.int8, np.int16, np.int32) if top <= np.iinfo(t).max)
            out = np.full(-(-c.size // D) * D, -1, dtype)
            out[: c.size] = c
            return out

        self._colors_np = {"col": pad(col.column_colors), "row": pad(col.row_colors)}
        self._arrays = None
        self.values_jit = jax.jit(self._values_impl)
        self.compressed_jit = jax.jit(self._compressed_impl)
        self.products_jit = jax.jit(self._products_impl)

    # -- data on the devices --------------------------------------------------------------
    def arrays(self):
        """The sharded index data (device arrays, made once; numpy inside a trace)."""
        if self._arrays is not None:
            return self._arrays
        data = {}
        if {"jvp", "hvp"} & set(self.kinds):
            data["col"] = self._colors_np["col"]
        if "vjp" in self.kinds:
            data["row"] = self._colors_np["row"]
        if self._index_np is not None:
            data["index"] = self._index_np
        # concrete global arrays even when called inside a trace (no tracer is cached)
        self._arrays = {k: _global_array(v, self._sharding(1)) for k, v in data.items()}
        return self._arrays

    def _sharding(self, ndim, axis=0):
        spec = [None] * ndim
        spec[axis] = _axis(self.mesh)
        return NamedSharding(self.mesh, PartitionSpec(*spec))

    def _constrain(self, a, axis=0):
        return jax.lax.with_sharding_constraint(a, self._sharding(a.ndim, axis))

    # -- the call ---------------------------------------------------------------------------
    def _product_fns(self, arrays, args):
        """``(x, [(product: (x, seed) -> product, colours, seed dtype, seed length)])``."""
        x, g = self.obj._flat.split(args)
        x = self._constrain(x)
        y_dtype = self.obj._flat.out_dtype
        fns = []
        for kind in self.kinds:
            if kind == "hvp":
                fns.append((lambda z, s, mode=self.obj.hvp_mode: hvp_fun(g, z, mode)(s),
                            arrays["col"], x.dtype, self.n))
            elif kind == "jvp":
                fns.append((lambda z, s: jax.jvp(g, (z,), (s,))[1], arrays["col"], x.dtype,
                            self.n))
            else:
                fns.append((lambda z, s: jax.vjp(g, z)[1](s)[0], arrays["row"], y_dtype,
                            self.m))
        return x, fns

    def _seed(self, colors, k, dtype, length):
        """Seed ``k`` (0/1 on the variables of colour ``k``), sharded like ``x``."""
        return self._constrain((colors == k).astype(dtype))[:length]

    def _products_impl(self, arrays, *args):
        """Per kind, the ``(count, D·block)`` products (zero-padded), sharded along length."""
        x, fns = self._product_fns(arrays, args)
        out = []
        for (fun, colors, dtype, length), q in zip(fns, self.parts, strict=True):
            seeds = self._constrain(_seeds(colors, q.count, dtype), axis=1)[:, :length]
            prod = _local_map(lambda s, fun=fun: fun(x, s), seeds, self.obj.chunk_size)
            out.append(self._constrain(self._pad(prod, q), axis=1))
        return out

    def _pad(self, prod, q):
        pad = self.devices * q.block - q.length
        if pad:
            zeros = jnp.zeros(prod.shape[:-1] + (pad,), prod.dtype)
            prod = jnp.concatenate([prod, zeros], axis=-1)
        return prod

    def _halo(self, prod, q):
        """``(D, width)``: row ``d`` is block ``d`` of one product with its two halos."""
        D, b = self.devices, q.block
        blocks = self._constrain(self._pad(prod, q).reshape(D, b))
        pieces = []
        if q.left:  # the last `left` positions of block d - 1 (zeros for d = 0)
            zeros = jnp.zeros((1, q.left), prod.dtype)
            pieces.append(jnp.concatenate([zeros, blocks[:-1, b - q.left:]], axis=0))
        pieces.append(blocks)
        if q.right:  # the first `right` positions of block d + 1 (zeros for the last)
            zeros = jnp.zeros((1, q.right), prod.dtype)
            pieces.append(jnp.concatenate([blocks[1:, : q.right], zeros], axis=0))
        return self._constrain(jnp.concatenate(pieces, axis=1) if len(pieces) > 1 else blocks)

    def _padded_impl(self, arrays, *args):
        D, B = self.devices, self.block
        dtype = jnp.result_type(self.obj._flat.out_dtype, self.obj._flat.x_dtype)
        if self.nnz == 0:
            return self._constrain(jnp.zeros((D * B,), dtype))
        if not self.local:  # the documented gather: every device gets all products
            prods = self._products_impl(arrays, *args)
            rep = NamedSharding(self.mesh, PartitionSpec())
            full = [jax.lax.with_sharding_constraint(p, rep)[:, : q.length].reshape(-1)
                    for p, q in zip(prods, self.parts, strict=True)]
            compressed = jnp.concatenate(full) if len(full) > 1 else full[0]
            vals = decompress_index(compressed, self.obj._static.numpy)
            vals = jnp.concatenate([vals, jnp.zeros((D * B - self.nnz,), vals.dtype)])
            return self._constrain(vals)
        # local: a loop over the colours, one product at a time, each written where its
        # nonzeros are; XLA fuses the product, its halo and this select into one pass, and
        # the loop's buffer is the output (no (c, n) batch is materialized)
        index = self._constrain(arrays["index"].reshape(D, B))
        vals = self._constrain(jnp.zeros((D, B), dtype))
        x, fns = self._product_fns(arrays, args)
        offset = 0
        for (fun, colors, sdtype, length), q in zip(fns, self.parts, strict=True):

            def one(k, vals, fun=fun, colors=colors, sdtype=sdtype, length=length, q=q,
                    offset=offset):
                # x·(1 + 0·k) is x exactly, but depends on k: XLA then recomputes the
                # primal inside each pass instead of hoisting it out of the loop, where
                # its linearization (several n/D vectors) would stay alive
                xk = x * (1.0 + 0.0 * k.astype(x.dtype))  # float: XLA cannot fold 0.0·k
                seed = self._seed(colors, k.astype(colors.dtype), sdtype, length)
                ext = self._halo(fun(xk, seed), q)
                rel = index - (offset + k.astype(index.dtype) * q.width)
                got = jax.vmap(lambda e, i: e[i])(ext, jnp.clip(rel, 0, q.width - 1))
                return self._constrain(jnp.where((rel >= 0) & (rel < q.width), got, vals))

            vals = jax.lax.fori_loop(0, q.count, one, vals)
            offset += q.count * q.width
        return vals.reshape(-1)

    def _values_impl(self, arrays, *args):
        vals = self._padded_impl(arrays, *args)
        if vals.shape[0] != self.nnz:
            return vals[: self.nnz]
        return self._constrain(vals)

    def _compressed_impl(self, arrays, *args):
        prods = self._products_impl(arrays, *args)
        flat = [p[:, : q.length].reshape(-1) for p, q in zip(prods, self.parts, strict=True)]
        if not flat:
            return jnp.zeros((0,), self.obj._flat.out_dtype)
        return jnp.concatenate(flat) if len(flat) > 1 else flat[0]

    # -- what the derivative object calls (its `_values_jit(index, *args)` signature) ------
    def values(self, _index, *args):
        return self.values_jit(self.arrays(), *args)

    def compressed(self, _index, *args):
        return self.compressed_jit(self.arrays(), *args)

    def __repr__(self) -> str:
        halos = ", ".join(f"{k} halo {q.left}+{q.right}" for k, q in
                          zip(self.kinds, self.parts, strict=True))
        how = "local" if self.local else "gathered"
        return (f"VariablePlan({self.devices} devices, {self.block} nonzeros per device, "
                f"{how} decompression, {halos})")


def attach(obj) -> None:
    """Pick colour or variable sharding for a derivative object built with a mesh.

    Called once by `SparseJacobian` / `SparseHessian` when ``mesh`` is given. Sets
    ``obj.sharding`` (``"none"``, ``"colors"`` or ``"variables"``); for ``"variables"`` it
    replaces the object's two jitted calls by those of a [`VariablePlan`][] (``obj.plan``).
    """
    mesh = obj.mesh
    how = choose_sharding(obj.coloring.n_colors, int(mesh.size), obj._flat.n, mesh.axis_names)
    obj.sharding = how
    obj.plan = None
    if how != "variables":
        return
    plan = VariablePlan(obj)
    obj.plan = plan
    # the single-device index copies (gather, colours: nnz + n integers on the default
    # device) are never read on this path; keep them as numpy only
    obj._static._dev = None
    obj._values_jit = plan.values
    obj._compressed_jit = plan.compressed


def padded_values(obj, *args) -> jax.Array:
    """The values of a variable-sharded object as the ``(D·ceil(nnz/D),)`` sharded array.

    Pattern order, zeros after ``nnz``; every device holds its own block (what ``values``
    returns when ``D`` divides ``nnz``).

    Args:
        obj: a `SparseJacobian` / `SparseHessian` whose ``sharding`` is ``"variables"``.
        *args: the call arguments.

    Returns:
        The padded values, sharded over the mesh.
    """
    plan = getattr(obj, "plan", None)
    if plan is None:
        raise ValueError(
            f"padded_values: {obj!r} is not split along the variables (its sharding is "
            f"{getattr(obj, 'sharding', 'none')!r}); build it with mesh=variable_mesh()."
        )
    if not hasattr(plan, "_padded_jit"):
        plan._padded_jit = jax.jit(plan._padded_impl)
    return plan._padded_jit(plan.arrays(), *args)


def sharded_mapper(mesh: Mesh):
    """The ``mapper`` of `_products.map_seeds` that splits a seed batch over ``mesh``."""
    return lambda fun, seeds, chunk_size: map_seeds_sharded(fun, seeds, chunk_size, mesh)


def sharded_products(obj, *args):
    """Debug accessor: the product batch of ``obj`` at ``args``, as JAX placed it.

    Args:
        obj: a `SparseJacobian` or `SparseHessian` built with ``mesh=``.
        *args: the call arguments.

    Returns:
        Colour axis: the padded ``(c_pad, len)`` batch of the first product kind (JVPs, or
        VJPs when there are none, or HVPs), zero rows after the ``c`` real ones, sharded
        along the seeds. Variable axis: the first kind's ``(c, D·block)`` products, sharded
        along their length.
    """
    mesh = getattr(obj, "mesh", None)
    if mesh is None:
        raise ValueError("sharded_products: the object was built without mesh=.")
    plan = getattr(obj, "plan", None)
    if plan is not None:
        return plan.products_jit(plan.arrays(), *args)[0]
    return _products_jit(obj, args)


def _products(obj, args):
    index = obj._static.get()
    x, g = obj._flat.split(args)
    c = obj.coloring
    if c.mode in ("star", "acyclic"):  # a Hessian
        s = make_seeds(index["col_colors"], c.n_colors, x.dtype)
        fun = hvp_fun(g, x, obj.hvp_mode)
    elif c.n_forward:
        s = make_seeds(index["col_colors"], c.n_forward, x.dtype)
        fun = jvp_fun(g, x)
    else:
        fun = vjp_fun(g, x)
        s = make_seeds(index["row_colors"], c.n_reverse, obj._flat.out_dtype)
    return map_seeds_sharded(fun, s, obj.chunk_size, obj.mesh, keep_padding=True)


_products_jit = jax.jit(_products, static_argnums=0)
