"""Gathers, dynamic slices and scatters: exact with known indices, the union of the reachable
windows when the indices are data-dependent but bounded (integer intervals)."""

from __future__ import annotations

import jax
import numpy as np
from jax import lax

from .. import _abstract as ab
from .. import _compat
from .._common import all_to_all, make
from .._registry import rule
from ._shared import movement, to_src

FIRST = [0]


@rule("gather")
def _gather(interp, eqn, ins):
    out = movement(FIRST)(interp, eqn, ins)
    if out is not None:
        return out
    # Unknown indices: each output may be any element of the operand.
    return all_to_all(ins[:1], [eqn.outvars[0].aval], interp.n_cols)


@rule("dynamic_slice")
def _dynamic_slice(interp, eqn, ins):
    out = movement(FIRST)(interp, eqn, ins)
    if out is not None:
        return out
    return all_to_all(ins[:1], [eqn.outvars[0].aval], interp.n_cols)


@rule("dynamic_update_slice")
def _dynamic_update_slice(interp, eqn, ins):
    out = movement([0, 1])(interp, eqn, ins)
    if out is not None:
        return out
    operand, update = ins[0], ins[1]
    everywhere = all_to_all([update], [eqn.outvars[0].aval], interp.n_cols)[0]
    deps = ab.union(operand.deps, everywhere.deps)
    return [make(eqn, deps, np.ones(operand.size, bool))]


# -- scatter: where does each update element land? ------------------------------------------
def _scatter_destinations(eqn, operand, indices, updates):
    """For each update element, the flat operand index it lands on (-1: dropped)."""
    p = _compat.scatter_params(eqn.params)
    ids = np.arange(1, operand.size + 1, dtype=np.float64).reshape(operand.shape)

    def scat(u):
        return lax.scatter_add(
            jax.numpy.zeros(operand.shape, np.float64), indices, u, p["dimension_numbers"],
            indices_are_sorted=p["indices_are_sorted"], unique_indices=p["unique_indices"],
            mode=p["mode"],
        )

    u_struct = jax.ShapeDtypeStruct(updates.shape, np.float64)
    (dest,) = jax.linear_transpose(scat, u_struct)(ids)
    return to_src(dest)


@rule("scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter_mul", "scatter-min",
      "scatter_min", "scatter-max", "scatter_max", "scatter_sub", "scatter-sub")
def _scatter(interp, eqn, ins):
    operand, indices, updates = ins[0], ins[1], ins[2]
    name = eqn.primitive.name
    if not indices.known:
        return all_to_all([operand, updates], [eqn.outvars[0].aval], interp.n_cols)
    dest = _scatter_destinations(eqn, operand, indices.value, updates)
    valid = dest >= 0
    upd_idx = np.nonzero(valid)[0]
    rel = ab.relation(dest[valid], upd_idx, operand.size, updates.size)
    written = np.zeros(operand.size, bool)
    written[dest[valid]] = True
    nz_land = np.zeros(operand.size, bool)
    nz_land[dest[valid][updates.nz[upd_idx]]] = True
    upd_deps = ab.apply_relation(rel, updates.deps)
    if name == "scatter":  # overwrite: written entries forget the operand
        deps = ab.union(ab.mask_rows(operand.deps, ~written), upd_deps)
        nz = np.where(written, nz_land, operand.nz)
    elif name in ("scatter-mul", "scatter_mul"):
        deps = ab.union(operand.deps, ab.mask_rows(upd_deps, operand.nz))
        nz = operand.nz.copy()
    else:
        deps = ab.union(operand.deps, upd_deps)
        nz = operand.nz | nz_land
    return [make(eqn, deps, nz)]


