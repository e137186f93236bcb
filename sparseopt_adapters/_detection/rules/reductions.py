"""Reductions and contractions: reduce_*, cumulative ops, windowed reductions, dot_general,
convolutions."""

from __future__ import annotations

import itertools

import numpy as np
import scipy.sparse as sp
from jax import lax

from .. import _abstract as ab
from .. import _compat
from .. import _intervals as iv
from .._common import make, out_shape_dtype, unknown_like
from .._registry import rule
from ._shared import to_src


# -- reductions -----------------------------------------------------------------------------
def _reduce_dest(in_shape, axes):
    keep = [d for d in range(len(in_shape)) if d not in axes]
    out_shape = tuple(in_shape[d] for d in keep)
    out_ids = np.arange(int(np.prod(out_shape, dtype=np.int64))).reshape(out_shape)
    expanded = np.expand_dims(out_ids, tuple(sorted(axes)))
    return np.broadcast_to(expanded, in_shape).reshape(-1), int(out_ids.size)


@rule("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin",
      "reduce_and", "reduce_or", "reduce_xor")
def _reduce(interp, eqn, ins):
    a = ins[0]
    axes = _compat.reduce_axes(eqn.params)
    dest, n_out = _reduce_dest(a.shape, axes)
    rel = ab.relation(dest, np.arange(a.size), n_out, a.size)
    shape, dtype = out_shape_dtype(eqn)
    if eqn.primitive.name in ("argmax", "argmin"):  # an index into the reduced axes
        n = int(np.prod([a.shape[d] for d in axes], dtype=np.int64))
        return [iv.bounded(shape, dtype, 0, max(n - 1, 0))]
    if not np.issubdtype(dtype, np.inexact):
        if eqn.primitive.name in ("reduce_max", "reduce_min") and a.lo is not None:
            lo, hi = iv.bounds(a)
            lo_r = np.full(n_out, np.inf)
            hi_r = np.full(n_out, -np.inf)
            np.minimum.at(lo_r, dest, lo.reshape(-1))
            np.maximum.at(hi_r, dest, hi.reshape(-1))
            return [iv.bounded(shape, dtype, lo_r.reshape(shape), hi_r.reshape(shape))]
        return [unknown_like(eqn.outvars[0].aval)]
    any_nz = np.bincount(dest, weights=a.nz, minlength=n_out) > 0
    if eqn.primitive.name == "reduce_prod":
        zeros = np.bincount(dest, weights=~a.nz, minlength=n_out)
        # d(prod)/dx_i vanishes when another factor is a known zero.
        keep = (zeros[dest] == 0) | ((zeros[dest] == 1) & ~a.nz)
        deps = ab.apply_relation(rel, ab.mask_rows(a.deps, keep))
        return [make(eqn, deps, zeros == 0)]
    return [make(eqn, ab.apply_relation(rel, a.deps), any_nz)]


@rule("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")
def _cumulative(interp, eqn, ins):
    a = ins[0]
    axis, reverse = _compat.cumulative_params(eqn.params)
    n = a.shape[axis]
    idx = np.arange(a.size).reshape(a.shape)
    moved = np.moveaxis(idx, axis, -1).reshape(-1, n)
    k, j = np.tril_indices(n) if not reverse else np.triu_indices(n)
    out_idx = moved[:, k].reshape(-1)
    in_idx = moved[:, j].reshape(-1)
    rel = ab.relation(out_idx, in_idx, a.size, a.size)
    nz = (rel @ a.nz.astype(np.float64)) > 0
    if eqn.primitive.name in ("cumprod", "cumlogsumexp"):
        nz = np.ones(a.size, bool)
    return [make(eqn, ab.apply_relation(rel, a.deps), nz)]


def _window_relation(in_shape, params):
    """(out_flat, in_flat) pairs of reduce_window: which inputs each output window reads."""
    wd = params["window_dimensions"]
    ws = params["window_strides"]
    pad = params["padding"]
    bd = params.get("base_dilation") or (1,) * len(in_shape)
    wdil = params.get("window_dilation") or (1,) * len(in_shape)
    ids = np.arange(1, int(np.prod(in_shape)) + 1, dtype=np.int64).reshape(in_shape)
    dil_shape = tuple((s - 1) * b + 1 if s else 0 for s, b in zip(in_shape, bd, strict=True))
    dilated = np.zeros(dil_shape, np.int64)
    dilated[tuple(slice(None, None, b) for b in bd)] = ids
    padded = np.pad(dilated, [(max(lo, 0), max(hi, 0)) for lo, hi in pad])
    # negative padding crops
    crop = tuple(
        slice(-lo if lo < 0 else 0, padded.shape[d] + hi if hi < 0 else None)
        for d, (lo, hi) in enumerate(pad)
    )
    padded = padded[crop]
    eff = [(w - 1) * d + 1 for w, d in zip(wd, wdil, strict=True)]
    out_shape = tuple(
        (p - e) // s + 1 if p >= e else 0
        for p, e, s in zip(padded.shape, eff, ws, strict=True)
    )
    out_ids = np.arange(int(np.prod(out_shape))).reshape(out_shape)
    outs, ins_ = [], []
    for w in itertools.product(*[range(x) for x in wd]):
        sl = tuple(
            slice(w_d * dl, w_d * dl + (o - 1) * s + 1, s) if o else slice(0, 0)
            for w_d, dl, o, s in zip(w, wdil, out_shape, ws, strict=True)
        )
        src = padded[sl]
        ok = src > 0
        outs.append(out_ids[ok])
        ins_.append(src[ok] - 1)
    return np.concatenate(outs), np.concatenate(ins_), int(out_ids.size)


@rule("reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window")
def _reduce_window(interp, eqn, ins):
    n_op = len(eqn.outvars)
    operands = ins[:n_op]
    a = operands[0]
    o_idx, i_idx, n_out = _window_relation(a.shape, eqn.params)
    rel = ab.relation(o_idx, i_idx, n_out, a.size)
    results = []
    for k in range(n_op):
        deps = ab.union(*[ab.apply_relation(rel, op.deps) for op in operands])
        results.append(make(eqn, deps, np.ones(n_out, bool), k))
    return results


@rule("select_and_gather_add")
def _select_and_gather_add(interp, eqn, ins):
    """JVP of max pooling: each output takes the tangent at one position of its window."""
    tangents, operand = ins
    o_idx, i_idx, n_out = _window_relation(operand.shape, eqn.params)
    rel = ab.relation(o_idx, i_idx, n_out, operand.size)
    return [make(eqn, ab.apply_relation(rel, tangents.deps), np.ones(n_out, bool))]


@rule("select_and_scatter_add")
def _select_and_scatter_add(interp, eqn, ins):
    """Transpose of max pooling: position i collects the cotangents of the windows holding i."""
    source, operand = ins[0], ins[1]
    o_idx, i_idx, n_out = _window_relation(operand.shape, eqn.params)
    rel = ab.relation(i_idx, o_idx, operand.size, n_out)
    return [make(eqn, ab.apply_relation(rel, source.deps), np.ones(operand.size, bool))]


@rule("select_and_scatter")
def _select_and_scatter(interp, eqn, ins):
    """Generic select-and-scatter: the windows of the source, plus the initial value."""
    source, operand, init = ins[0], ins[1], ins[2]
    o_idx, i_idx, n_out = _window_relation(operand.shape, eqn.params)
    rel = ab.relation(i_idx, o_idx, operand.size, n_out)
    init_b = ab.broadcast_scalar(init, operand.shape, interp.n_cols)
    deps = ab.union(ab.apply_relation(rel, source.deps), init_b.deps)
    return [make(eqn, deps, np.ones(operand.size, bool))]


@rule("reduce")
def _generic_reduce(interp, eqn, ins):
    """``lax.reduce`` with a user computation: every output depends on its reduced group of
    every operand and on the initial values (sound for any computation)."""
    n = len(eqn.outvars)
    operands, inits = ins[:n], ins[n:]
    axes = tuple(eqn.params["dimensions"])
    dest, n_out = _reduce_dest(operands[0].shape, axes)
    rel = ab.relation(dest, np.arange(operands[0].size), n_out, operands[0].size)
    deps = ab.union(
        *[ab.apply_relation(rel, op.deps) for op in operands],
        *[ab.broadcast_scalar(i, (n_out,), interp.n_cols).deps for i in inits],
    )
    return [make(eqn, deps, np.ones(n_out, bool), k) for k in range(n)]


# -- dot_general ----------------------------------------------------------------------------
def _canonical(a: ab.AbstractArray, batch, free, contract):
    perm = tuple(batch) + tuple(free) + tuple(contract)
    idx = np.arange(a.size).reshape(a.shape).transpose(perm).reshape(-1)
    nz = a.nz[idx]
    deps = a.deps[idx] if a.deps is not None else None
    return nz, deps


def _join(keys, csr):
    """All pairs (k, c) with c a column of row ``keys[k]`` of ``csr``."""
    counts = np.diff(csr.indptr)[keys]
    left = np.repeat(np.arange(keys.size, dtype=np.int64), counts)
    starts = np.repeat(csr.indptr[keys], counts)
    offs = np.arange(left.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return left, csr.indices[starts + offs].astype(np.int64)


@rule("dot_general")
def _dot_general(interp, eqn, ins):
    lhs, rhs = ins
    (lc, rc), (lb, rb) = _compat.dot_dimension_numbers(eqn.params)
    lf = [d for d in range(len(lhs.shape)) if d not in lc and d not in lb]
    rf = [d for d in range(len(rhs.shape)) if d not in rc and d not in rb]
    B = int(np.prod([lhs.shape[d] for d in lb], dtype=np.int64))
    I = int(np.prod([lhs.shape[d] for d in lf], dtype=np.int64))
    J = int(np.prod([lhs.shape[d] for d in lc], dtype=np.int64))
    K = int(np.prod([rhs.shape[d] for d in rf], dtype=np.int64))
    nzA, depsA = _canonical(lhs, lb, lf, lc)  # (B, I, J)
    nzB, depsB = _canonical(rhs, rb, rc, rf)  # (B, J, K)
    n_out = B * I * K
    # nz of the product: does some j pair a possible nonzero A[b,i,j] with B[b,j,k]?
    nz = None
    if B * I * J * K <= 2e8:
        a3 = nzA.reshape(B, I, J).astype(np.float32)
        b3 = nzB.reshape(B, J, K).astype(np.float32)
        nz = (np.matmul(a3, b3) > 0).reshape(-1)
    a_bj = sp.csr_array(nzA.reshape(B, I, J).transpose(0, 2, 1).reshape(B * J, I))
    b_bj = sp.csr_array(nzB.reshape(B * J, K))
    if nz is None:
        aa = np.nonzero(nzA)[0]
        keys = (aa // (I * J)) * J + aa % J
        left, k = _join(keys, b_bj)
        bi = aa[left] // J
        nz = np.zeros(n_out, bool)
        nz[bi * K + k] = True
    deps = []
    if depsA is not None:
        rows_a = np.nonzero(np.diff(depsA.indptr) > 0)[0]  # flat (b, i, j)
        keys = (rows_a // (I * J)) * J + rows_a % J
        left, k = _join(keys, b_bj)
        out = (rows_a[left] // J) * K + k
        rel = ab.relation(out, rows_a[left], n_out, B * I * J)
        deps.append(ab.apply_relation(rel, depsA))
    if depsB is not None:
        rows_b = np.nonzero(np.diff(depsB.indptr) > 0)[0]  # flat (b, j, k)
        keys = rows_b // K  # b*J + j
        left, i = _join(keys, a_bj)
        bsel = rows_b[left] // (J * K)
        out = (bsel * I + i) * K + rows_b[left] % K
        rel = ab.relation(out, rows_b[left], n_out, B * J * K)
        deps.append(ab.apply_relation(rel, depsB))
    return [make(eqn, ab.union(*deps), nz)]


@rule("conv_general_dilated")
def _conv(interp, eqn, ins):
    """Exact for every convolution, grouped and depthwise included.

    ``out[n, o, s] = Σ_{ci, tap} lhs[bm(n, o), g(o)·Cg + ci, s ⊕ tap] · rhs[o, ci, tap]`` with
    ``Cg = C / feature_group_count``, ``g(o)`` the feature group of ``o`` and ``bm`` the lhs
    batch of output batch ``n`` in ``o``'s batch group (``batch_group_count``: lhs batch
    ``b·N/B + n``). The lhs window positions come from ``conv_general_dilated_patches`` on
    element ids (padding and dilation included); known zeros of either operand drop terms.
    """
    lhs, rhs = ins
    p = _compat.conv_params(eqn.params)
    dn = p["dimension_numbers"]
    G, B = p["feature_group_count"], p["batch_group_count"]
    rhs_spec, out_spec = dn.rhs_spec, dn.out_spec
    ids = (np.arange(lhs.size, dtype=np.float64) + 1).reshape(lhs.shape)
    rhs_spatial = tuple(rhs.shape[d] for d in rhs_spec[2:])
    pat = lax.conv_general_dilated_patches(
        ids, rhs_spatial, p["window_strides"], p["padding"], p["lhs_dilation"],
        p["rhs_dilation"], dimension_numbers=dn, precision=lax.Precision.HIGHEST,
    )
    pat = np.moveaxis(np.asarray(pat), (out_spec[0], out_spec[1]), (0, 1))  # (N, C*T, *sp)
    n_lhs, F = pat.shape[0], pat.shape[1]
    S = int(np.prod(pat.shape[2:], dtype=np.int64))
    src = to_src(pat).reshape(n_lhs, F, S)  # flat lhs index, -1 for padding
    out_shape = eqn.outvars[0].aval.shape
    out_idx = np.moveaxis(np.arange(int(np.prod(out_shape))).reshape(out_shape),
                          (out_spec[0], out_spec[1]), (0, 1))
    n_out, O = out_idx.shape[0], out_idx.shape[1]
    out_idx = out_idx.reshape(n_out, O, S)
    # rhs canonical (O, Cg, T): flat rhs ids and possible-nonzero mask
    r_ids = np.transpose(np.arange(rhs.size).reshape(rhs.shape), rhs_spec).reshape(O, -1)
    Cg = rhs.shape[rhs_spec[1]]
    T = r_ids.shape[1] // max(Cg, 1)
    r_ids = r_ids.reshape(O, Cg, T)
    r_nz = rhs.nz[r_ids]
    o = np.arange(O)
    group = o // max(O // G, 1)  # feature group of each output channel
    bgroup = o // max(O // B, 1)  # batch group of each output channel
    # features f = c * T + tap for every (o, ci, tap)
    c = group[:, None] * Cg + np.arange(Cg)[None, :]  # (O, Cg)
    f = (c[:, :, None] * T + np.arange(T)[None, None, :])  # (O, Cg, T)
    # lhs batch read by (n, o)
    bm = bgroup[None, :] * (n_lhs // B) + np.arange(n_out)[:, None]  # (n_out, O)
    # gather lhs ids: (n_out, O, Cg, T, S)
    lhs_src = src[bm[:, :, None, None], f[None], :]
    valid = lhs_src >= 0
    lhs_nz = np.zeros(lhs_src.shape, bool)
    lhs_nz[valid] = lhs.nz[lhs_src[valid]]
    out_b = np.broadcast_to(out_idx[:, :, None, None, :], lhs_src.shape)
    deps = []
    if lhs.has_deps:
        keep = valid & r_nz[None, :, :, :, None]
        rel = ab.relation(out_b[keep], lhs_src[keep], out_idx.size, lhs.size)
        deps.append(ab.apply_relation(rel, lhs.deps))
    if rhs.has_deps:
        keep = valid & lhs_nz
        r_b = np.broadcast_to(r_ids[None, :, :, :, None], lhs_src.shape)
        rel = ab.relation(out_b[keep], r_b[keep], out_idx.size, rhs.size)
        deps.append(ab.apply_relation(rel, rhs.deps))
    term = valid & lhs_nz & r_nz[None, :, :, :, None]
    nz = np.zeros(out_idx.size, bool)
    nz[out_b[term]] = True
    return [make(eqn, ab.union(*deps), nz)]



