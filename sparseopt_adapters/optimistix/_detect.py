"""Sparsity detection for functions and operators as optimistix hands them to a solver.

optimistix closure-converts ``fn`` (``equinox.filter_closure_convert``) and then runs the
solver's ``init``/``step`` inside ``jax.custom_jvp`` and ``jax.lax.while_loop`` traces. By then
every array ``fn`` closed over -- data matrices, and also the integer index arrays of gathers
and of [`PatternMatrix`][sparseopt_adapters.PatternMatrix] products -- is a tracer, and
detection would have to treat it as an unknown value (a sound but loose, often dense,
pattern). Two things keep the patterns tight:

1. *Recovering concrete constants.* The closure-converted ``fn`` is created inside
   ``optx.least_squares`` / ``optx.minimise`` while its constants are still concrete. We look
   for that object in the calling frames: a local holding a closure-converted function whose
   ``jaxpr`` is *the same object* as the one we were given carries the same constants in the
   same order. Only then are its concrete constants used; anything not recovered stays an
   unknown value. This reads optimistix's call stack (``iterative_solve``'s local ``fn``), so a
   future optimistix may stop providing it: detection then falls back to the sound, looser
   pattern, and ``pattern=`` always overrides detection.
2. *Unknown values stay unknown.* Arrays that are still traced (``args`` always are, and
   closures under a user's own ``jax.jit``) enter detection as ``jax.ShapeDtypeStruct`` inputs,
   so the pattern holds for every value they can take.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._detection import hessian_sparsity, jacobian_sparsity
from .._pattern import SparsityPattern

_MAX_FRAMES = 64


class MeshField:
    """The ``mesh=`` of a solver as a static (hashable) field: the mesh, or ``None``.

    Example:
        >>> from sparseopt_adapters.optimistix._detect import MeshField
        >>> MeshField.of(None, "demo").mesh is None
        True
    """

    __slots__ = ("mesh",)

    def __init__(self, mesh):
        self.mesh = mesh

    @classmethod
    def of(cls, mesh, caller: str) -> MeshField:
        if isinstance(mesh, MeshField):
            return mesh
        if mesh is None:
            return cls(None)
        from .._sharding import check_mesh

        return cls(check_mesh(mesh, caller))

    def __hash__(self):
        return hash(self.mesh)

    def __eq__(self, other):
        return isinstance(other, MeshField) and self.mesh == other.mesh

    def __repr__(self):
        return f"MeshField({self.mesh!r})"


def constrain_tree(tree, mesh: MeshField, host_callback: bool = False):
    """``tree`` with its array leaves split over ``mesh.mesh`` along their leading axis.

    The split is that of ``_sharding.solver_sharding`` on the flat size of ``tree`` (one rule
    with ``sa.GaussNewton``); a leaf whose leading axis the devices do not divide (a scalar,
    a short parameter block) stays replicated. No-op without a mesh or under that rule's
    "replicated", and when ``host_callback`` (the step calls the host from inside the
    compiled loop: a sparse factorisation) on several CPU devices: a host callback inside an
    SPMD program on CPU devices deadlocked from n = 4096 on (its operands are read while
    every device waits in the program), so those steps run unsplit there.
    """
    if mesh.mesh is None:
        return tree
    devices = mesh.mesh.devices.flat
    if host_callback and mesh.mesh.size > 1 and devices[0].platform == "cpu":
        return tree
    from jax.sharding import NamedSharding, PartitionSpec

    from .._sharding import constrain_vector, solver_sharding

    flat = solver_sharding(mesh.mesh, flat_size(structure_of(tree)), "sa_optx")
    if flat is None:
        return tree
    D = int(mesh.mesh.size)

    def one(a):
        if not eqx.is_inexact_array(a) or a.ndim == 0 or a.shape[0] % D:
            return a
        spec = PartitionSpec(flat.spec[0], *([None] * (a.ndim - 1)))
        return constrain_vector(a, NamedSharding(mesh.mesh, spec))

    return jax.tree.map(one, tree)


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _is_closure_converted(x) -> bool:
    return isinstance(x, eqx.Module) and hasattr(x, "jaxpr") and hasattr(x, "consts")


def _n_traced(consts) -> int:
    return sum(_is_tracer(c) for c in jax.tree.leaves(consts))


def _find_concrete_consts(node, frame) -> Any:
    """The consts of a closure-converted function with ``node.jaxpr``, found in ``frame`` or
    its callers, with the fewest tracers; ``node.consts`` when none is better."""
    best, best_traced = node.consts, _n_traced(node.consts)
    depth = 0
    while frame is not None and depth < _MAX_FRAMES and best_traced:
        for value in list(frame.f_locals.values()):
            if (
                value is not node
                and _is_closure_converted(value)
                and value.jaxpr is node.jaxpr
            ):
                consts = value.consts
                if (
                    jax.tree.structure(consts) == jax.tree.structure(node.consts)
                    and _n_traced(consts) < best_traced
                ):
                    best, best_traced = consts, _n_traced(consts)
        frame = frame.f_back
        depth += 1
    return best


def recover_concrete_consts(tree):
    """``tree`` with the traced constants of its closure-converted functions replaced by the
    concrete ones found in the calling frames (see the module docstring)."""
    frame = sys._getframe(1)

    def fix(x):
        if _is_closure_converted(x) and _n_traced(x.consts):
            consts = _find_concrete_consts(x, frame)
            if consts is not x.consts:
                return eqx.tree_at(lambda f: f.consts, x, consts)
        return x

    return jax.tree.map(fix, tree, is_leaf=_is_closure_converted)


def _is_array_or_struct(x) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def split_known(tree) -> tuple[Callable[[list], Any], list[jax.ShapeDtypeStruct]]:
    """Split the arrays of ``tree`` into concrete (kept, value-aware) and traced (unknown;
    ``jax.ShapeDtypeStruct`` leaves count as traced).

    Returns ``(rebuild, structs)``: ``rebuild(unknowns)`` is ``tree`` with its traced arrays
    replaced by ``unknowns`` (one per entry of ``structs``, e.g. the tracers of a detection
    trace), and ``structs`` their shapes and dtypes.
    """
    dynamic, static = eqx.partition(tree, _is_array_or_struct)
    leaves, treedef = jax.tree.flatten(dynamic)
    traced = [_is_tracer(x) or isinstance(x, jax.ShapeDtypeStruct) for x in leaves]
    structs = [
        jax.ShapeDtypeStruct(x.shape, x.dtype)
        for x, t in zip(leaves, traced, strict=True)
        if t
    ]

    def rebuild(unknowns):
        it = iter(unknowns)
        new = [next(it) if t else x for x, t in zip(leaves, traced, strict=True)]
        return eqx.combine(jax.tree.unflatten(treedef, new), static)

    return rebuild, structs


def structure_of(tree):
    """``jax.ShapeDtypeStruct`` pytree of ``tree`` (static fields such as a PatternMatrix's
    pattern are kept)."""
    return jax.eval_shape(lambda: tree)


def flat_size(struct) -> int:
    return sum(math.prod(s.shape) for s in jax.tree.leaves(struct))


def struct_ravel(struct):
    """``(ravel, unravel, size)`` between a ShapeDtypeStruct pytree and a flat float64 vector
    (leaves in ``jax.tree.leaves`` order, each raveled row-major: the layout of patterns)."""
    leaves, treedef = jax.tree.flatten(struct)
    shapes = [tuple(s.shape) for s in leaves]
    dtypes = [s.dtype for s in leaves]
    offsets = np.concatenate([[0], np.cumsum([math.prod(s) for s in shapes], dtype=np.int64)])
    offsets = [int(o) for o in offsets]

    def ravel(tree):
        parts = [jnp.ravel(a).astype(jnp.float64) for a in jax.tree.leaves(tree)]
        if not parts:
            return jnp.zeros((0,), jnp.float64)
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts)

    def unravel(v):
        out = [
            v[offsets[k] : offsets[k + 1]].reshape(shapes[k]).astype(dtypes[k])
            for k in range(len(shapes))
        ]
        return jax.tree.unflatten(treedef, out)

    return ravel, unravel, offsets[-1]


def fn_pattern(fn, y, args, *, hessian: bool = False, recover: bool = True) -> SparsityPattern:
    """Pattern of the Jacobian of ``fn(y, args)[0]`` (or Hessian, for a scalar) w.r.t. ``y``.

    ``fn`` follows optimistix's internal convention ``fn(y, args) -> (out, aux)``; ``y`` and
    ``args`` may be tracers (only their structure is used for ``y``; traced ``args`` are
    unknown values). Rows and columns follow ``ravel_pytree`` of ``out`` and ``y``.
    """
    if recover:
        fn = recover_concrete_consts(fn)
    rebuild, unknown = split_known((fn, args))
    y_struct = structure_of(y)

    def g(yy, unknowns):
        f, a = rebuild(unknowns)
        return f(yy, a)[0]

    detect = hessian_sparsity if hessian else jacobian_sparsity
    return _untraced(detect, g, y_struct, unknown)


def operator_pattern(operator) -> SparsityPattern:
    """Pattern of a lineax operator as an ``out_size × in_size`` matrix, detected on ``mv``.

    Concrete arrays inside the operator are used by value (e.g. the zeros of a
    ``lx.MatrixLinearOperator`` built outside ``jit``); traced ones are unknown.
    """
    operator = recover_concrete_consts(operator)
    rebuild, unknown = split_known(operator)
    _, unravel_in, n = struct_ravel(operator.in_structure())
    ravel_out, _, _ = struct_ravel(operator.out_structure())

    def g(v, unknowns):
        return ravel_out(rebuild(unknowns).mv(unravel_in(v)))

    return _untraced(jacobian_sparsity, g, jax.ShapeDtypeStruct((n,), jnp.float64), unknown)


def _untraced(detect, g, *example):
    # Detection evaluates primitives on concrete numpy data (constant folding, index
    # bookkeeping). Inside an optimistix trace those binds would be staged out as tracers;
    # `ensure_compile_time_eval` makes them run eagerly, as they do outside any trace.
    with jax.ensure_compile_time_eval():
        return detect(g, *example, argnums=0)
