"""Global sparsity detection: Jacobian and Hessian patterns of JAX functions.

Detection traces ``f`` to a jaxpr once and interprets it abstractly (see ``_abstract.py`` for
the value that flows, ``_rules.py`` for the per-primitive rules). The result is *global*: it
holds for every value of the differentiated inputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import jax
import jax.flatten_util
import numpy as np
import scipy.sparse as sp
from jax.extend import core as jcore

from . import _abstract as ab
from ._errors import SparsityWarning
from ._pattern import SparsityPattern

# Unrolling budget: loops whose trip count is known are interpreted iteration by iteration
# (exact patterns) while iterations × equations stays under this; beyond it a fixed point.
UNROLL_BUDGET = 200_000
# Fixed-point iterations before widening a loop carry to "every element depends on all".
WIDEN_AFTER = 64


class Interpreter:
    """Abstract interpreter over jaxprs, with ``n_cols`` input variables."""

    def __init__(self, n_cols: int, expanding: frozenset = frozenset(), warned=None):
        self.n_cols = int(n_cols)
        self.expanding = expanding
        self.warned = set() if warned is None else warned

    # -- jaxpr walking ------------------------------------------------------------------
    def run(self, jaxpr, consts: Sequence, args: Sequence) -> list[ab.AbstractArray]:
        env: dict = {}

        def read(v):
            if isinstance(v, jcore.Literal):
                return ab.known(np.asarray(v.val))
            return env[v]

        for v, a in zip(jaxpr.constvars, consts, strict=True):
            env[v] = a
        for v, a in zip(jaxpr.invars, args, strict=True):
            env[v] = a
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.eqn(eqn, ins)
            for v, o in zip(eqn.outvars, outs, strict=True):
                if not isinstance(v, jcore.DropVar):
                    env[v] = o
        return [read(v) for v in jaxpr.outvars]

    def run_closed(self, closed, args: Sequence) -> list[ab.AbstractArray]:
        if isinstance(closed, jcore.ClosedJaxpr):
            consts = [to_known(c) for c in closed.consts]
            return self.run(closed.jaxpr, consts, args)
        return self.run(closed, [], args)  # an open Jaxpr without constvars

    # -- one equation -------------------------------------------------------------------
    def eqn(self, eqn, ins: list[ab.AbstractArray]) -> list[ab.AbstractArray]:
        from ._rules import RULES, numpy_fold

        name = eqn.primitive.name
        if all(a.known for a in ins) and not eqn.effects and name not in NO_FOLD:
            values = [a.value for a in ins]
            try:
                folded = numpy_fold(eqn, values)
            except Exception:
                folded = None
            if folded is None:
                folded = fold(eqn, values)
            if folded is not None:
                return folded
        rule = RULES.get(name)
        if rule is not None:
            outs = rule(self, eqn, ins)
            if outs is not None:
                return outs
        if not any(a.has_deps for a in ins) or not any(is_inexact(v.aval) for v in eqn.outvars):
            return [unknown_like(v.aval) for v in eqn.outvars]
        return self.fallback(eqn, ins)

    def fallback(self, eqn, ins):
        from ._rules import sparse_reference_impl

        name = eqn.primitive.name
        impl = sparse_reference_impl(eqn.primitive)
        if impl is not None:
            closed = jax.make_jaxpr(lambda *xs: impl(*xs, **eqn.params))(
                *[shape_struct(v.aval) for v in eqn.invars]
            )
            outs = self.run_closed(closed, ins)
            return outs if eqn.primitive.multiple_results else outs[:1]
        if name not in self.expanding:
            try:
                return local_pattern_by_ad(self, eqn, ins)
            except _NoAD:
                pass
        return self.conservative(eqn, ins, reason="no sparsity rule")

    def conservative(self, eqn, ins, reason: str):
        name = eqn.primitive.name
        if name not in self.warned:
            self.warned.add(name)
            warnings.warn(
                f"sparsity detection has {reason} for primitive '{name}': every output of it "
                "is assumed to depend on every input (sound, possibly dense). Silence with "
                "warnings.filterwarnings('ignore', category=sparseopt_adapters.SparsityWarning).",
                SparsityWarning,
                stacklevel=4,
            )
        return all_to_all(ins, [v.aval for v in eqn.outvars], self.n_cols)


class _NoAD(Exception):
    pass


# Primitives never constant-folded (side effects or costs that folding would hide).
NO_FOLD = frozenset({"pure_callback", "io_callback", "debug_callback", "debug_print"})


def is_inexact(aval) -> bool:
    try:
        return np.issubdtype(np.dtype(aval.dtype), np.inexact)
    except TypeError:
        return False


def np_dtype(aval):
    try:
        return np.dtype(aval.dtype)
    except TypeError:  # extended dtypes (PRNG keys)
        return np.dtype(np.uint32)


def unknown_like(aval) -> ab.AbstractArray:
    return ab.unknown(getattr(aval, "shape", ()), np_dtype(aval))


def shape_struct(aval):
    return jax.ShapeDtypeStruct(aval.shape, aval.dtype)


def to_known(value) -> ab.AbstractArray:
    try:
        arr = np.asarray(value)
    except Exception:  # extended dtypes: keep the jax value for folding only
        a = ab.unknown(np.shape(value), np.uint32)
        a.value = value
        return a
    return ab.known(arr)


def fold(eqn, values):
    """Evaluate an equation on concrete inputs (all known), or ``None`` if that fails."""
    try:
        outs = bind_eqn(eqn, *values)
    except Exception:
        return None
    return [to_known(o) for o in outs]


def all_to_all(ins, out_avals, n_cols):
    """Every output element depends on every input element (a sound last resort)."""
    rows = [
        a.deps.sum(axis=0).reshape(1, -1) for a in ins if a.has_deps
    ]
    outs = []
    row = ab.as_bool_csr(sp.csr_array(sum(rows))) if rows else None
    for aval in out_avals:
        size = int(np.prod(aval.shape, dtype=np.int64))
        if row is None or not is_inexact(aval):
            outs.append(unknown_like(aval))
            continue
        deps = ab.selection(np.zeros(size, np.int64), 1) @ row
        outs.append(ab.from_deps(aval.shape, np_dtype(aval), deps, np.ones(size, bool)))
    return outs


def bind_eqn(eqn, *args):
    params = eqn.primitive.get_bind_params(eqn.params)
    out = eqn.primitive.bind(*args, **params)
    return out if eqn.primitive.multiple_results else [out]


def local_pattern_by_ad(interp: Interpreter, eqn, ins):
    """Pattern of one equation from its own derivative rule (JVP, else VJP), interpreted.

    This is how ``custom_jvp``/``custom_vjp`` functions get the pattern of their derivative
    rule rather than of their primal, and how primitives without a dedicated rule still get a
    structured pattern when their JVP is written in terms of primitives that have one.
    """
    diff = [i for i, a in enumerate(ins) if a.has_deps and is_inexact(eqn.invars[i].aval)]
    avals = [eqn.invars[i].aval for i in range(len(ins))]
    sizes = [ins[i].size for i in diff]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n_local = int(offsets[-1])
    primal_args = [shape_struct(a) for a in avals]

    def substitute(primals, dxs):
        full = list(primals)
        for i, d in zip(diff, dxs, strict=True):
            full[i] = d
        return full

    out_avals = [v.aval for v in eqn.outvars]
    diff_out = [k for k, a in enumerate(out_avals) if is_inexact(a)]
    primal_ins = [ab.AbstractArray(a.shape, a.dtype, a.nz, None, a.value) for a in ins]
    expanding = interp.expanding | {eqn.primitive.name}
    inner = Interpreter(n_local, expanding, interp.warned)

    local = None
    if eqn.primitive.name != "custom_vjp_call":
        try:

            def jvp_fn(primals, tangents):
                f = lambda *dx: bind_eqn(eqn, *substitute(primals, dx))
                return jax.jvp(f, [primals[i] for i in diff], list(tangents))[1]

            closed = jax.make_jaxpr(jvp_fn)(
                primal_args, [shape_struct(avals[i]) for i in diff]
            )
            tangent_ins = [
                identity_block(ins[i], offsets[k], n_local) for k, i in enumerate(diff)
            ]
            outs = inner.run_closed(closed, primal_ins + tangent_ins)
            local = {k: outs[k].deps for k in diff_out}
        except Exception:
            local = None
    if local is None:
        try:

            def vjp_fn(primals, cts):
                f = lambda *dx: bind_eqn(eqn, *substitute(primals, dx))
                _, pullback = jax.vjp(f, *[primals[i] for i in diff])
                full_cts = [
                    cts[diff_out.index(k)] if k in diff_out else np.zeros(a.shape, a.dtype)
                    for k, a in enumerate(out_avals)
                ]
                return pullback(full_cts)

            closed = jax.make_jaxpr(vjp_fn)(
                primal_args, [shape_struct(out_avals[k]) for k in diff_out]
            )
            out_sizes = [int(np.prod(out_avals[k].shape, dtype=np.int64)) for k in diff_out]
            out_off = np.concatenate([[0], np.cumsum(out_sizes)]).astype(np.int64)
            vinner = Interpreter(int(out_off[-1]), expanding, interp.warned)
            ct_ins = [
                ab.AbstractArray(
                    out_avals[k].shape,
                    np_dtype(out_avals[k]),
                    np.ones(out_sizes[j], bool),
                    identity_cols(out_sizes[j], out_off[j], int(out_off[-1])),
                )
                for j, k in enumerate(diff_out)
            ]
            in_cts = vinner.run_closed(closed, primal_ins + ct_ins)
            stacked = sp.vstack([ab.deps_or_empty(c, int(out_off[-1])) for c in in_cts]).T
            stacked = ab.as_bool_csr(stacked)
            local = {
                k: stacked[out_off[j] : out_off[j + 1]] for j, k in enumerate(diff_out)
            }
        except Exception as e:
            raise _NoAD() from e
    in_deps = sp.vstack([ins[i].deps for i in diff]).tocsr()
    results = []
    for k, aval in enumerate(out_avals):
        if k not in diff_out or local[k] is None:
            results.append(unknown_like(aval))
            continue
        deps = ab.apply_relation(ab.as_bool_csr(local[k]), in_deps)
        size = int(np.prod(aval.shape, dtype=np.int64))
        results.append(ab.from_deps(aval.shape, np_dtype(aval), deps, np.ones(size, bool)))
    return results


def identity_cols(size: int, offset: int, n_cols: int) -> sp.csr_array:
    idx = np.arange(size, dtype=np.int64)
    return sp.csr_array(
        (np.ones(size, bool), idx + offset, np.arange(size + 1, dtype=np.int64)),
        shape=(size, n_cols),
    )


def identity_block(a: ab.AbstractArray, offset: int, n_cols: int) -> ab.AbstractArray:
    return ab.AbstractArray(
        a.shape, a.dtype, np.ones(a.size, bool), identity_cols(a.size, offset, n_cols)
    )


# -- public API -----------------------------------------------------------------------------
def _normalize_argnums(argnums, n_args: int) -> tuple[tuple[int, ...], bool]:
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)
    for a in nums:
        if not isinstance(a, int) or not -n_args <= a < n_args:
            raise ValueError(
                f"argnums={argnums!r} does not name a positional argument of a call with "
                f"{n_args} example argument(s)."
            )
    return tuple(a % n_args for a in nums), single


def _input_abstracts(args, argnums):
    """Abstract inputs: identity dependencies for differentiated leaves, values for others."""
    flat_avals, abstracts = [], []
    offset = 0
    leaves_per_arg = [jax.tree_util.tree_leaves(a) for a in args]
    n_cols = 0
    for i in argnums:
        for leaf in leaves_per_arg[i]:
            dtype = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else np.result_type(leaf))
            if not np.issubdtype(dtype, np.inexact):
                raise TypeError(
                    f"argument {i} has a leaf of dtype {dtype}: differentiated arguments must "
                    "be floating point. Pass integer data as another argument (not in argnums)."
                )
            n_cols += int(np.prod(np.shape(leaf), dtype=np.int64))
    for i, leaves in enumerate(leaves_per_arg):
        for leaf in leaves:
            shape = tuple(np.shape(leaf))
            dtype = getattr(leaf, "dtype", None) or np.result_type(leaf)
            flat_avals.append(jax.ShapeDtypeStruct(shape, dtype))
            size = int(np.prod(shape, dtype=np.int64))
            if i in argnums:
                deps = identity_cols(size, offset, n_cols)
                abstracts.append(
                    ab.AbstractArray(shape, np.dtype(dtype), np.ones(size, bool), deps)
                )
                offset += size
            elif (
                not isinstance(leaf, jax.ShapeDtypeStruct | jax.core.Tracer)
                and not np.issubdtype(np.dtype(dtype), np.inexact)
            ):
                # Integer/bool data (indices, sizes) is treated as fixed: its example value
                # is part of the program's structure.
                abstracts.append(ab.known(np.asarray(leaf)))
            else:
                abstracts.append(ab.unknown(shape, np.dtype(dtype)))
    return flat_avals, abstracts, n_cols


def _trace(f, args):
    structs = jax.tree_util.tree_map(
        lambda x: x if isinstance(x, jax.ShapeDtypeStruct)
        else jax.ShapeDtypeStruct(np.shape(x), getattr(x, "dtype", None) or np.result_type(x)),
        args,
    )
    return jax.make_jaxpr(f)(*structs)


def _outputs_to_pattern(outs, n_cols) -> SparsityPattern:
    blocks = [ab.deps_or_empty(o, n_cols) for o in outs]
    m = sum(o.size for o in outs)
    if not blocks:
        return SparsityPattern(np.zeros(0, np.int64), np.zeros(0, np.int64), (m, n_cols))
    full = sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]
    full = ab.as_bool_csr(full)
    full.sum_duplicates()
    full.sort_indices()
    return SparsityPattern.from_csr(full)


def jacobian_sparsity(f, *args, argnums=0) -> SparsityPattern:
    """Global sparsity pattern of the Jacobian of ``f`` with respect to ``args[argnums]``.

    The pattern has one row per element of ``ravel_pytree(f(*args))`` and one column per
    element of ``ravel_pytree(args[argnums])`` (a tuple of them for tuple ``argnums``), and
    contains every entry that is nonzero at *any* input value. Only shapes and dtypes of the
    differentiated arguments matter (``jax.ShapeDtypeStruct`` works); integer arguments not
    differentiated are index data and their values are taken as fixed; floating-point
    arguments not differentiated are treated as unknown values.

    Args:
        f: a JAX-traceable function.
        *args: example arguments (arrays, pytrees of arrays, or ``jax.ShapeDtypeStruct``).
        argnums: which positional argument(s) to differentiate, as in ``jax.jacfwd``.

    Returns:
        A [`SparsityPattern`][sparseopt_adapters.SparsityPattern].

    Example:
        >>> import jax.numpy as jnp
        >>> import sparseopt_adapters as sa
        >>> p = sa.jacobian_sparsity(lambda x: x[1:] * x[:-1], jnp.ones(4))
        >>> p
        SparsityPattern(3×4, nnz=6, density=50.0%)
    """
    argnums_t, _ = _normalize_argnums(argnums, len(args))
    _, abstracts, n_cols = _input_abstracts(args, argnums_t)
    closed = _trace(f, args)
    interp = Interpreter(n_cols)
    outs = interp.run_closed(closed, abstracts)
    return _outputs_to_pattern(outs, n_cols)


def hessian_sparsity(f, *args, argnums=0) -> SparsityPattern:
    """Global sparsity pattern of the Hessian of a scalar ``f`` w.r.t. ``args[argnums]``.

    Computed as the Jacobian pattern of ``jax.grad(f)``, so linear terms contribute nothing
    and ``x_i * x_j`` couples only ``i`` and ``j``; the result is symmetric.

    Example:
        >>> import jax.numpy as jnp
        >>> import sparseopt_adapters as sa
        >>> f = lambda x: jnp.sum(x[1:] * x[:-1]) + jnp.sum(x)
        >>> sa.hessian_sparsity(f, jnp.ones(4)).nnz
        6
    """
    argnums_t, single = _normalize_argnums(argnums, len(args))
    out = jax.eval_shape(f, *args)
    if not (hasattr(out, "shape") and out.shape == () and is_inexact(out)):
        raise ValueError(
            "hessian_sparsity needs a function returning a real scalar, got "
            f"{jax.tree_util.tree_map(lambda o: (o.shape, str(o.dtype)), out)}. "
            "For vector outputs use jacobian_sparsity."
        )
    grad = jax.grad(f, argnums=argnums_t[0] if single else argnums_t)

    def flat_grad(*a):
        return jax.flatten_util.ravel_pytree(grad(*a))[0]

    p = jacobian_sparsity(flat_grad, *args, argnums=argnums)
    return p.symmetrize()
