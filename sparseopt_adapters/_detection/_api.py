"""Public entry points: ``jacobian_sparsity`` and ``hessian_sparsity``.

Detection traces ``f`` to a jaxpr once and interprets it abstractly (``_abstract.py``: the
value that flows; ``_interpreter.py``: the walk; ``rules/``: one module per primitive family).
The result is *global*: it holds for every value of the differentiated inputs.
"""

from __future__ import annotations

import jax
import jax.flatten_util
import numpy as np
import scipy.sparse as sp

from .._pattern import SparsityPattern
from . import _abstract as ab
from . import rules as _rules  # noqa: F401  (registers every rule)
from ._common import identity_cols, is_inexact
from ._interpreter import Interpreter


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


def _input_abstracts(args, argnums, columns=None):
    """Abstract inputs: identity dependencies for differentiated leaves, values for others.

    ``columns`` (optional, sorted unique indices into the differentiated entries, raveled in
    leaf order) keeps only those entries as variables: the others are unknown values that
    depend on nothing, and the pattern has ``len(columns)`` columns.
    """
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
                if columns is None:
                    deps = identity_cols(size, offset, n_cols)
                else:
                    deps = _selected_cols(size, offset, columns)
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


def _selected_cols(size: int, offset: int, columns: np.ndarray) -> sp.csr_array:
    """Rows ``0..size-1`` of a leaf starting at ``offset``: row ``columns[k] - offset``
    depends on column ``k``, every other row on nothing."""
    k = np.flatnonzero((columns >= offset) & (columns < offset + size))
    counts = np.zeros(size, np.int64)
    counts[columns[k] - offset] = 1
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_array((np.ones(k.size, bool), k, indptr), shape=(size, columns.size))


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
    _, abstracts, n_cols = _input_abstracts(args, argnums_t)  # bad dtypes: before tracing
    return _run(_trace(f, args), abstracts, n_cols)


def jacobian_sparsity_of_jaxpr(closed, *args, argnums=0, columns=None) -> SparsityPattern:
    """``jacobian_sparsity`` of a function already traced to ``closed`` (its
    ``jax.make_jaxpr`` on the structure of ``args``), so a caller that traces once can
    detect on the same jaxpr it later evaluates.

    ``columns`` (sorted unique indices into the raveled differentiated entries) detects only
    those columns of the Jacobian (the pattern is ``m × len(columns)``; the other entries
    are unknown values): costs ``m·len(columns)`` at most, however dense the Jacobian.
    """
    argnums_t, _ = _normalize_argnums(argnums, len(args))
    if columns is not None:
        columns = np.asarray(columns, np.int64)
    _, abstracts, n_cols = _input_abstracts(args, argnums_t, columns)
    return _run(closed, abstracts, n_cols if columns is None else int(columns.size))


def _run(closed, abstracts, n_cols) -> SparsityPattern:
    outs = Interpreter(n_cols).run_closed(closed, abstracts)
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
