"""Data movement: outputs copy elements of the inputs (reshape, slice, pad, concatenate,
transpose, tile, split, unstack, sort by known keys ...). Exact by running the primitive (or
its numpy twin in ``_fold.NUMPY_IMPL``) on arrays of element ids."""

from __future__ import annotations

import numpy as np

from .. import _compat
from .._common import bind_eqn, group_deps, make, unknown_like
from .._registry import rule
from ._shared import gathered, id_arrays, movement, to_src

ALL = lambda ins: list(range(len(ins)))  # noqa: E731
FIRST = [0]
_ONE_OPERAND = "reshape squeeze expand_dims broadcast_in_dim transpose rev slice split tile unstack"
rule(*_ONE_OPERAND.split())(movement(FIRST))
rule(*"concatenate pad sharding_constraint optimization_barrier stack".split())(movement(ALL))


@rule("device_put", "mesh_cast", "reshard", "pvary", "name", "layout_constraint", "shard_alike",
      "random_clone", "reduced_vary_cast", "reduced_vary_cast_p", "vary_unreduced_cast",
      "vary_unreduced_cast_p", "relayout", "inspect_sharding")
def _identity(interp, eqn, ins):
    """Outputs are the inputs (placement, naming, sharding annotations)."""
    return list(ins[: len(eqn.outvars)])


@rule("sort")
def _sort(interp, eqn, ins):
    dim, num_keys = _compat.sort_params(eqn.params)
    keys = ins[:num_keys]
    if all(k.known for k in keys):
        # The permutation is fixed: sort ids along with the keys.
        ids = id_arrays(ins)
        args = [k.value for k in keys] + ids[num_keys:]
        outs = bind_eqn(eqn, *args)
        res = []
        for j, o in enumerate(outs):
            if j < num_keys:
                res.append(unknown_like(eqn.outvars[j].aval))
            else:
                res.append(gathered(eqn, ins, to_src(o), j))
        return res
    # Unknown permutation: each output line depends on the whole line of its operand.
    results = []
    for j, a in enumerate(ins):
        idx = np.moveaxis(np.arange(a.size).reshape(a.shape), dim, -1)
        groups = np.empty(a.size, np.int64)
        groups[idx.reshape(-1)] = np.repeat(np.arange(idx.size // a.shape[dim]), a.shape[dim])
        n_groups = a.size // max(a.shape[dim], 1)
        deps = group_deps(groups, groups, n_groups, a.deps)
        results.append(make(eqn, deps, np.ones(a.size, bool), j))
    return results


@rule("top_k", "approx_top_k")
def _top_k(interp, eqn, ins):
    """The k selected values of a line depend on the whole line (which ones varies)."""
    a = ins[0]
    axis = eqn.params.get("reduction_dimension", eqn.params.get("axis", -1))
    if axis not in (-1, len(a.shape) - 1):
        return None  # falls back to the JVP rule (sound)
    n = a.shape[-1]
    groups_in = np.arange(a.size) // max(n, 1)
    out_shape = eqn.outvars[0].aval.shape
    k = out_shape[-1]
    groups_out = np.arange(int(np.prod(out_shape))) // max(k, 1)
    deps = group_deps(groups_out, groups_in, a.size // max(n, 1), a.deps)
    return [
        make(eqn, deps, np.ones(groups_out.size, bool), 0),
        unknown_like(eqn.outvars[1].aval),
    ]


