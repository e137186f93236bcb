"""Spread the color batch of a compressed derivative over the devices of a `jax.sharding.Mesh`.

The compressed products of [`sparse_jacobian`][sparseopt_adapters.sparse_jacobian] and
[`sparse_hessian`][sparseopt_adapters.sparse_hessian] (one JVP, VJP or HVP per color) are
independent, so the seed batch is split along its leading axis with `jax.shard_map`: every
device runs the same vmapped product on its own block of seeds, with the primal point (and,
for VJPs, the linearization) replicated. JAX (XLA's SPMD partitioner and its runtime, or
`jax.distributed` across hosts) does all the placement and communication; there is no
scheduler here.

Order and values: the seeds are padded with zero rows up to a multiple of the number of
devices (a zero seed gives a zero product), device ``d`` gets the contiguous block ``d``, and
the padding is sliced off afterwards. The products come back in color order, so
decompression (a gather by precomputed indices) is the single-device one, with the same
values.

Memory: chunking composes with sharding. With ``chunk_size`` set, each device maps over its
block in chunks of ``ceil(chunk_size / devices)`` seeds (`jax.lax.map` of a vmap), so a step
of the whole mesh still evaluates about ``chunk_size`` products, and the peak per device is
about::

    ceil(chunk_size / devices) * max(m, n) floats  (the tangents / cotangents in flight)
    + ceil(n_colors / devices) * len(products) floats  (this device's block of the result)
    + the primal's working set (x, f(x), the residuals of the linearization)

where a product has length ``m`` for a JVP, ``n`` for a VJP or HVP. Without ``chunk_size`` the
first term is ``ceil(n_colors / devices) * max(m, n)`` times the tangent working set of ``f``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["color_mesh", "check_mesh", "map_seeds_sharded", "seed_sharding"]

#: Name of the axis of the 1-D mesh built by [`color_mesh`][].
COLOR_AXIS = "colors"


def color_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all of `jax.devices()`), axis ``"colors"``.

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
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("color_mesh: no devices given.")
    return Mesh(np.array(devs, dtype=object), (COLOR_AXIS,))


def check_mesh(mesh, caller: str = "sparse_jacobian") -> Mesh | None:
    """Normalize the ``mesh=`` keyword: ``None``, a `Mesh`, or a sequence of devices.

    Args:
        mesh: ``None`` (single device), a `jax.sharding.Mesh` (the seeds are sharded over
            all its axes together), or a sequence of devices (a 1-D [`color_mesh`][]).
        caller: the public function, for error messages.

    Returns:
        ``None`` or a `Mesh`.
    """
    if mesh is None or isinstance(mesh, Mesh):
        return mesh
    if isinstance(mesh, Sequence) and all(isinstance(d, jax.Device) for d in mesh):
        return color_mesh(mesh)
    raise TypeError(
        f"{caller}: mesh must be a jax.sharding.Mesh, a sequence of jax devices or None, got "
        f"{type(mesh).__name__}."
    )


def _spec(mesh: Mesh) -> PartitionSpec:
    names = tuple(mesh.axis_names)
    return PartitionSpec(names[0] if len(names) == 1 else names)


def seed_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a seed (or product) batch: leading axis over every mesh axis."""
    return NamedSharding(mesh, _spec(mesh))


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
    from ._compressed import _map_seeds  # the single-device map, used on every device

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
        lambda s: _map_seeds(fun, s, local_chunk), mesh=mesh, in_specs=spec, out_specs=spec,
        # the closure (primal point, linearization) is replicated; the products of a
        # device depend on its own seeds only, which is all out_specs=spec claims
        check_vma=False,
    )(seeds)
    return out if keep_padding or c_pad == c else out[:c]


def sharded_products(obj, *args) -> jax.Array:
    """Debug accessor: the padded product batch of ``obj`` at ``args``, as JAX placed it.

    Args:
        obj: a `SparseJacobian` or `SparseHessian` built with ``mesh=``.
        *args: the call arguments.

    Returns:
        The ``(c_pad, len)`` batch of the first product kind (JVPs, or VJPs when there are
        none, or HVPs), zero rows after the ``c`` real ones; its ``.sharding`` is the
        mesh sharding of the seed axis.
    """
    mesh = getattr(obj, "mesh", None)
    if mesh is None:
        raise ValueError("sharded_products: the object was built without mesh=.")
    return _products_jit(obj, args)


def _products(obj, args):
    from ._compressed import SparseHessian, _seeds

    index = obj._static.get()
    x, g = obj._flat.split(args)
    chunk = obj.chunk_size
    if isinstance(obj, SparseHessian):
        grad = jax.grad(lambda z: g(z)[0])
        seeds = _seeds(index["col_colors"], obj.coloring.n_colors, x.dtype)
        fun = lambda s: jax.jvp(grad, (x,), (s,))[1]  # noqa: E731
    elif obj.coloring.n_forward:
        seeds = _seeds(index["col_colors"], obj.coloring.n_forward, x.dtype)
        fun = lambda s: jax.jvp(g, (x,), (s,))[1]  # noqa: E731
    else:
        y, pull = jax.vjp(g, x)
        seeds = _seeds(index["row_colors"], obj.coloring.n_reverse, y.dtype)
        fun = lambda s: pull(s)[0]  # noqa: E731
    return map_seeds_sharded(fun, seeds, chunk, obj.mesh, keep_padding=True)


_products_jit = jax.jit(_products, static_argnums=0)
