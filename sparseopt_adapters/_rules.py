"""Per-primitive sparsity rules: the one place that knows JAX primitive names.

A rule is ``rule(interp, eqn, ins) -> list[AbstractArray] | None`` (``None``: not handled,
use the fallback chain in ``_detection.Interpreter.fallback``). Rules are vectorised numpy /
scipy.sparse: data-movement primitives are applied to arrays of *element ids* by running the
primitive itself, so their rule is exact without re-implementing their index semantics.
"""

from __future__ import annotations

import itertools

import jax
import numpy as np
import scipy.sparse as sp
from jax import lax

from . import _abstract as ab
from ._detection import (
    UNROLL_BUDGET,
    WIDEN_AFTER,
    all_to_all,
    bind_eqn,
    local_pattern_by_ad,
    np_dtype,
    unknown_like,
)

RULES: dict = {}


def rule(*names):
    def register(fn):
        for n in names:
            RULES[n] = fn
        return fn

    return register


def _out(eqn, k=0):
    aval = eqn.outvars[k].aval
    return aval.shape, np_dtype(aval)


def _make(eqn, deps, nz, k=0):
    shape, dtype = _out(eqn, k)
    if not np.issubdtype(dtype, np.inexact):
        return unknown_like(eqn.outvars[k].aval)
    return ab.from_deps(shape, dtype, deps, nz)


def _bcast(interp, a, shape):
    return ab.broadcast_scalar(a, shape, interp.n_cols)


# -- elementwise ----------------------------------------------------------------------------
ELEMENTWISE = """
neg sin cos tan asin acos atan sinh cosh tanh asinh acosh atanh exp exp2 log log1p expm1
sqrt rsqrt cbrt logistic abs square integer_pow erf erfc erf_inv lgamma digamma igamma
igammac igamma_grad_a random_gamma_grad bessel_i0e bessel_i1e polygamma zeta
regularized_incomplete_beta
real imag conj complex copy copy_p reduce_precision convert_element_type add sub max min pow
atan2 rem nextafter clamp add_any
""".split()
ZERO_DERIVATIVE = """
sign floor ceil round is_finite stop_gradient eq ne lt le gt ge and or not xor
shift_left shift_right_logical shift_right_arithmetic population_count clz
""".split()


def _zero_image(eqn, ins):
    """Does the elementwise op map all-zero operands to a nonzero?"""
    try:
        zs = [np.zeros((), a.dtype) for a in ins]
        out = bind_eqn(eqn, *zs)[0]
        return bool(np.asarray(out) != 0)
    except Exception:
        return True


@rule(*ELEMENTWISE)
def _elementwise(interp, eqn, ins):
    shape, dtype = _out(eqn)
    ins = [_bcast(interp, a, shape) for a in ins]
    nz = np.zeros(ins[0].size if ins else 0, bool)
    for a in ins:
        nz |= a.nz
    if _zero_image(eqn, ins):
        nz[:] = True
    if not np.issubdtype(dtype, np.inexact):
        return [unknown_like(eqn.outvars[0].aval)]
    deps = ab.union(*[a.deps for a in ins if a.differentiable])
    if eqn.primitive.name == "integer_pow" and eqn.params.get("y") == 0:
        deps = None
    return [ab.from_deps(shape, dtype, deps, nz)]


@rule(*ZERO_DERIVATIVE)
def _zero_derivative(interp, eqn, ins):
    shape, dtype = _out(eqn)
    if eqn.primitive.name == "stop_gradient":
        a = ins[0]
        return [ab.AbstractArray(shape, dtype, a.nz.copy(), None, a.value)]
    ins = [_bcast(interp, a, shape) for a in ins]
    nz = np.zeros(int(np.prod(shape, dtype=np.int64)), bool)
    for a in ins:
        nz |= a.nz
    if _zero_image(eqn, ins):
        nz[:] = True
    return [ab.AbstractArray(shape, dtype, nz)]


@rule("mul")
def _mul(interp, eqn, ins):
    shape, dtype = _out(eqn)
    a, b = (_bcast(interp, x, shape) for x in ins)
    deps = ab.union(ab.mask_rows(a.deps, b.nz), ab.mask_rows(b.deps, a.nz))
    return [_make(eqn, deps, a.nz & b.nz)]


@rule("div")
def _div(interp, eqn, ins):
    shape, dtype = _out(eqn)
    a, b = (_bcast(interp, x, shape) for x in ins)
    deps = ab.union(a.deps, ab.mask_rows(b.deps, a.nz))
    return [_make(eqn, deps, a.nz.copy())]


@rule("select_n")
def _select_n(interp, eqn, ins):
    shape, dtype = _out(eqn)
    pred, cases = ins[0], [_bcast(interp, c, shape) for c in ins[1:]]
    size = int(np.prod(shape, dtype=np.int64))
    if pred.known:
        which = np.broadcast_to(np.asarray(pred.value).astype(np.int64), shape).reshape(-1)
        src = which * size + np.arange(size)
        return [_gathered(eqn, cases, src)]
    deps = ab.union(*[c.deps for c in cases])
    nz = np.zeros(size, bool)
    for c in cases:
        nz |= c.nz
    return [_make(eqn, deps, nz)]


# -- data movement by running the primitive on element ids -----------------------------------
def _stack(inputs, n_cols):
    deps = [ab.deps_or_empty(a, n_cols) for a in inputs]
    all_deps = sp.vstack(deps, format="csr") if len(deps) > 1 else deps[0]
    nz = np.concatenate([a.nz for a in inputs]) if inputs else np.zeros(0, bool)
    return all_deps, nz


def _gathered(eqn, data, src, k=0):
    """Output k takes element ``src[j]`` of the concatenated ``data`` inputs (-1: zero)."""
    n_cols = next((a.deps.shape[1] for a in data if a.deps is not None), None)
    valid = src >= 0
    nz_all = np.concatenate([a.nz for a in data])
    nz = np.zeros(src.size, bool)
    nz[valid] = nz_all[src[valid]]
    if n_cols is None:
        return _make(eqn, None, nz, k)
    all_deps, _ = _stack(data, n_cols)
    deps = ab.apply_relation(ab.selection(src, all_deps.shape[0]), all_deps)
    return _make(eqn, deps, nz, k)


def _id_arrays(data):
    ids, offset = [], 1
    for a in data:
        ids.append((np.arange(a.size, dtype=np.float64) + offset).reshape(a.shape))
        offset += a.size
    return ids


def _to_src(out) -> np.ndarray:
    out = np.asarray(out, dtype=np.float64).reshape(-1)
    out = np.where(np.isnan(out), 0.0, out)
    return np.rint(out).astype(np.int64) - 1


# numpy implementations of index-only primitives: applying them to element ids (or folding
# them on constants) needs no XLA compilation. Anything else runs through JAX itself.
def _np_pad(x, pv, config):
    for axis, (lo, hi, interior) in enumerate(config):
        n = x.shape[axis]
        new_n = n + max(n - 1, 0) * interior
        shape = list(x.shape)
        shape[axis] = new_n
        y = np.full(shape, pv, dtype=x.dtype)
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(None, None, interior + 1)
        y[tuple(sl)] = x
        for amount, front in ((lo, True), (hi, False)):
            if amount > 0:
                shape = list(y.shape)
                shape[axis] = amount
                fill = np.full(shape, pv, dtype=x.dtype)
                y = np.concatenate([fill, y] if front else [y, fill], axis=axis)
            elif amount < 0:
                keep = np.arange(-amount, y.shape[axis]) if front else np.arange(
                    y.shape[axis] + amount)
                y = np.take(y, keep, axis=axis)
        x = y
    return x


def _np_dynamic_slice(x, *starts, slice_sizes):
    idx = tuple(
        slice(int(np.clip(s, 0, d - z)), int(np.clip(s, 0, d - z)) + z)
        for s, d, z in zip(starts, x.shape, slice_sizes, strict=True)
    )
    return x[idx]


def _np_dynamic_update_slice(x, u, *starts):
    out = np.array(x, copy=True)
    idx = tuple(
        slice(int(np.clip(s, 0, d - z)), int(np.clip(s, 0, d - z)) + z)
        for s, d, z in zip(starts, x.shape, u.shape, strict=True)
    )
    out[idx] = u
    return out


def _np_broadcast_in_dim(x, shape, broadcast_dimensions, **_):
    expanded = np.reshape(x, [x.shape[broadcast_dimensions.index(d)] if d in
                              broadcast_dimensions else 1 for d in range(len(shape))])
    return np.broadcast_to(expanded, shape)


NUMPY_IMPL = {
    # lax.reshape permutes by ``dimensions`` (when given) before a row-major reshape.
    "reshape": lambda x, new_sizes, dimensions=None, **_: np.reshape(
        np.transpose(x, dimensions) if dimensions is not None else x, new_sizes),
    "squeeze": lambda x, dimensions, **_: np.squeeze(x, axis=tuple(dimensions)),
    "expand_dims": lambda x, dimensions, **_: np.expand_dims(x, tuple(dimensions)),
    "broadcast_in_dim": _np_broadcast_in_dim,
    "transpose": lambda x, permutation, **_: np.transpose(x, permutation),
    "rev": lambda x, dimensions, **_: np.flip(x, axis=tuple(dimensions)) if dimensions else x,
    "slice": lambda x, start_indices, limit_indices, strides=None, **_: x[tuple(
        slice(a, b, s) for a, b, s in zip(
            start_indices, limit_indices, strides or (1,) * len(start_indices), strict=True))],
    "concatenate": lambda *xs, dimension, **_: np.concatenate(xs, axis=dimension),
    "pad": lambda x, pv, padding_config, **_: _np_pad(x, pv, padding_config),
    "select_n": lambda p, *cs, **_: np.choose(np.asarray(p).astype(np.int64), cs),
    "dynamic_slice": lambda x, *st, slice_sizes, **_: _np_dynamic_slice(
        x, *st, slice_sizes=slice_sizes),
    "dynamic_update_slice": lambda x, u, *st, **_: _np_dynamic_update_slice(x, u, *st),
    "copy": lambda x, **_: x,
    "copy_p": lambda x, **_: x,
    "iota": lambda *_, dtype, shape, dimension, **__: np.broadcast_to(
        np.arange(shape[dimension], dtype=dtype).reshape(
            [-1 if d == dimension else 1 for d in range(len(shape))]), shape),
}
# Elementwise folds in numpy (exact for these; integer division and friends stay in JAX).
NUMPY_FOLD = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "neg": np.negative,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal,
    "gt": np.greater, "ge": np.greater_equal, "and": np.logical_and, "or": np.logical_or,
    "max": np.maximum, "min": np.minimum, "abs": np.abs,
}


def numpy_fold(eqn, values):
    """Fold an equation on constants with numpy when that is exact; else ``None``."""
    name = eqn.primitive.name
    out_aval = eqn.outvars[0].aval if len(eqn.outvars) == 1 else None
    if out_aval is None:
        return None
    try:
        dtype = np.dtype(out_aval.dtype)
    except TypeError:
        return None
    if name in NUMPY_IMPL:
        out = NUMPY_IMPL[name](*[np.asarray(v) for v in values], **eqn.params)
    elif name in NUMPY_FOLD:
        if name in ("and", "or") and dtype != np.bool_:
            return None
        out = NUMPY_FOLD[name](*[np.asarray(v) for v in values])
    elif name == "convert_element_type" and np.issubdtype(dtype, np.floating):
        out = np.asarray(values[0])
    else:
        return None
    out = np.asarray(out).astype(dtype, copy=False)
    if out.shape != tuple(out_aval.shape):
        return None
    return [ab.known(out)]


def _movement(data_pos):
    """Rule for a primitive whose outputs copy elements of its ``data_pos`` operands."""

    def rule_fn(interp, eqn, ins):
        pos = data_pos(ins) if callable(data_pos) else data_pos
        data = [ins[i] for i in pos]
        others = [i for i in range(len(ins)) if i not in pos]
        if any(not ins[i].known for i in others):
            return None if any(a.has_deps for a in data) else _unknown_outs(eqn, data)
        ids = _id_arrays(data)
        args = list(a.value for a in ins)
        for i, x in zip(pos, ids, strict=True):
            args[i] = x
        try:
            if eqn.primitive.name in NUMPY_IMPL:
                outs = [NUMPY_IMPL[eqn.primitive.name](*args, **eqn.params)]
            else:
                outs = bind_eqn(eqn, *args)
        except Exception:
            return None
        return [_gathered(eqn, data, _to_src(o), k) for k, o in enumerate(outs)]

    return rule_fn


def _unknown_outs(eqn, data):
    return [unknown_like(v.aval) for v in eqn.outvars]


ALL = lambda ins: list(range(len(ins)))  # noqa: E731
FIRST = [0]
for _names, _pos in [
    ("reshape squeeze expand_dims broadcast_in_dim transpose rev slice dynamic_slice", FIRST),
    ("gather split", FIRST),
    ("concatenate pad sharding_constraint optimization_barrier stack", ALL),
    ("dynamic_update_slice", [0, 1]),
]:
    for _n in _names.split():
        RULES[_n] = _movement(_pos)


@rule("device_put", "mesh_cast", "reshard", "pvary")
def _identity(interp, eqn, ins):
    return list(ins[: len(eqn.outvars)])


@rule("gather")
def _gather(interp, eqn, ins):
    out = _movement(FIRST)(interp, eqn, ins)
    if out is not None:
        return out
    # Unknown indices: each output may be any element of the operand.
    return all_to_all(ins[:1], [eqn.outvars[0].aval], interp.n_cols)


@rule("dynamic_slice")
def _dynamic_slice(interp, eqn, ins):
    out = _movement(FIRST)(interp, eqn, ins)
    if out is not None:
        return out
    return all_to_all(ins[:1], [eqn.outvars[0].aval], interp.n_cols)


@rule("dynamic_update_slice")
def _dynamic_update_slice(interp, eqn, ins):
    out = _movement([0, 1])(interp, eqn, ins)
    if out is not None:
        return out
    operand, update = ins[0], ins[1]
    everywhere = all_to_all([update], [eqn.outvars[0].aval], interp.n_cols)[0]
    deps = ab.union(operand.deps, everywhere.deps)
    return [_make(eqn, deps, np.ones(operand.size, bool))]


# -- scatter: where does each update element land? ------------------------------------------
def _scatter_destinations(eqn, operand, indices, updates):
    """For each update element, the flat operand index it lands on (-1: dropped)."""
    p = eqn.params
    ids = np.arange(1, operand.size + 1, dtype=np.float64).reshape(operand.shape)

    def scat(u):
        return lax.scatter_add(
            jax.numpy.zeros(operand.shape, np.float64), indices, u, p["dimension_numbers"],
            indices_are_sorted=p["indices_are_sorted"], unique_indices=p["unique_indices"],
            mode=p["mode"],
        )

    u_struct = jax.ShapeDtypeStruct(updates.shape, np.float64)
    (dest,) = jax.linear_transpose(scat, u_struct)(ids)
    return _to_src(dest)


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
    return [_make(eqn, deps, nz)]


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
    axes = tuple(eqn.params["axes"])
    dest, n_out = _reduce_dest(a.shape, axes)
    rel = ab.relation(dest, np.arange(a.size), n_out, a.size)
    shape, dtype = _out(eqn)
    if not np.issubdtype(dtype, np.inexact):
        return [unknown_like(eqn.outvars[0].aval)]
    any_nz = np.bincount(dest, weights=a.nz, minlength=n_out) > 0
    if eqn.primitive.name == "reduce_prod":
        zeros = np.bincount(dest, weights=~a.nz, minlength=n_out)
        # d(prod)/dx_i vanishes when another factor is a known zero.
        keep = (zeros[dest] == 0) | ((zeros[dest] == 1) & ~a.nz)
        deps = ab.apply_relation(rel, ab.mask_rows(a.deps, keep))
        return [_make(eqn, deps, zeros == 0)]
    return [_make(eqn, ab.apply_relation(rel, a.deps), any_nz)]


@rule("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp")
def _cumulative(interp, eqn, ins):
    a = ins[0]
    axis, reverse = eqn.params["axis"], eqn.params["reverse"]
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
    return [_make(eqn, ab.apply_relation(rel, a.deps), nz)]


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
        results.append(_make(eqn, deps, np.ones(n_out, bool), k))
    return results


# -- grouped (structured conservative) rules -------------------------------------------------
def _group_deps(out_groups, in_groups, n_groups, deps):
    """Output element k depends on every input element of group ``out_groups[k]``."""
    if deps is None:
        return None
    g_in = ab.relation(in_groups, np.arange(in_groups.size), n_groups, in_groups.size)
    per_group = ab.apply_relation(g_in, deps)
    if per_group is None:
        return None
    return ab.apply_relation(ab.selection(out_groups, n_groups), per_group)


def _batch_groups(shape, n_batch):
    size = int(np.prod(shape, dtype=np.int64))
    inner = int(np.prod(shape[n_batch:], dtype=np.int64))
    return np.arange(size, dtype=np.int64) // max(inner, 1)


def _batched_all_to_all(interp, eqn, ins, n_core_in=2):
    """Linear algebra: outputs of batch b depend on every input element of batch b."""
    ref = next(a for a in ins if a.differentiable)
    batch = ref.shape[: len(ref.shape) - n_core_in]
    n_groups = int(np.prod(batch, dtype=np.int64))
    results = []
    for k, v in enumerate(eqn.outvars):
        shape = v.aval.shape
        if tuple(shape[: len(batch)]) != tuple(batch):
            return all_to_all(ins, [o.aval for o in eqn.outvars], interp.n_cols)
        og = _batch_groups(shape, len(batch))
        deps = ab.union(
            *[
                _group_deps(og, _batch_groups(a.shape, len(batch)), n_groups, a.deps)
                for a in ins
                if a.has_deps and tuple(a.shape[: len(batch)]) == tuple(batch)
            ]
        )
        results.append(_make(eqn, deps, np.ones(int(np.prod(shape, dtype=np.int64)), bool), k))
    return results


for _n in ("cholesky lu qr householder_product geqrf geqp3 eigh eig svd schur hessenberg "
           "tridiagonal tridiagonal_solve cholesky_update lu_pivots_to_permutation").split():
    RULES[_n] = _batched_all_to_all


@rule("fft")
def _fft(interp, eqn, ins):
    n = len(eqn.params["fft_lengths"])
    return _batched_all_to_all(interp, eqn, ins, n_core_in=n)


@rule("triangular_solve")
def _triangular_solve(interp, eqn, ins):
    a, b = ins
    left = eqn.params["left_side"]
    nb = len(b.shape) - 2
    n_batch = int(np.prod(b.shape[:nb], dtype=np.int64))
    m, n = b.shape[-2:]
    bidx = np.arange(b.size).reshape(n_batch, m, n)
    batch_of = np.repeat(np.arange(n_batch), m * n)
    # x[..., :, k] uses column k of b (left side); x[..., i, :] row i (right side).
    line = (bidx % n) if left else (bidx // n) % m
    line = line.reshape(-1)
    width = n if left else m
    groups = batch_of * width + line
    deps_b = _group_deps(groups, groups, n_batch * width, b.deps)
    a_groups = _batch_groups(a.shape, nb)
    deps_a = _group_deps(_batch_groups(b.shape, nb), a_groups, n_batch, a.deps)
    return [_make(eqn, ab.union(deps_a, deps_b), np.ones(b.size, bool))]


@rule("sort")
def _sort(interp, eqn, ins):
    dim = eqn.params["dimension"]
    num_keys = eqn.params["num_keys"]
    keys = ins[:num_keys]
    if all(k.known for k in keys):
        # The permutation is fixed: sort ids along with the keys.
        ids = _id_arrays(ins)
        args = [k.value for k in keys] + ids[num_keys:]
        outs = bind_eqn(eqn, *args)
        res = []
        for j, o in enumerate(outs):
            if j < num_keys:
                res.append(unknown_like(eqn.outvars[j].aval))
            else:
                res.append(_gathered(eqn, ins, _to_src(o), j))
        return res
    # Unknown permutation: each output line depends on the whole line of its operand.
    results = []
    for j, a in enumerate(ins):
        idx = np.moveaxis(np.arange(a.size).reshape(a.shape), dim, -1)
        groups = np.empty(a.size, np.int64)
        groups[idx.reshape(-1)] = np.repeat(np.arange(idx.size // a.shape[dim]), a.shape[dim])
        n_groups = a.size // max(a.shape[dim], 1)
        deps = _group_deps(groups, groups, n_groups, a.deps)
        results.append(_make(eqn, deps, np.ones(a.size, bool), j))
    return results


@rule("top_k")
def _top_k(interp, eqn, ins):
    a = ins[0]
    n = a.shape[-1]
    groups_in = np.arange(a.size) // max(n, 1)
    out_shape = eqn.outvars[0].aval.shape
    k = out_shape[-1]
    groups_out = np.arange(int(np.prod(out_shape))) // max(k, 1)
    deps = _group_deps(groups_out, groups_in, a.size // max(n, 1), a.deps)
    return [
        _make(eqn, deps, np.ones(groups_out.size, bool), 0),
        unknown_like(eqn.outvars[1].aval),
    ]


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
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
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
    return [_make(eqn, ab.union(*deps), nz)]


@rule("conv_general_dilated")
def _conv(interp, eqn, ins):
    lhs, rhs = ins
    p = eqn.params
    dn = p["dimension_numbers"]
    if p["feature_group_count"] != 1 or p["batch_group_count"] != 1:
        return None
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    # Patches of lhs ids: for each output (n, spatial) the lhs elements its window reads.
    ids = (np.arange(lhs.size, dtype=np.float64) + 1).reshape(lhs.shape)
    n_sp = len(lhs.shape) - 2
    rhs_spatial = tuple(rhs.shape[d] for d in rhs_spec[2:])
    lhs_c = lhs.shape[lhs_spec[1]]
    pat = lax.conv_general_dilated_patches(
        ids, rhs_spatial, p["window_strides"], p["padding"], p["lhs_dilation"],
        p["rhs_dilation"], dimension_numbers=dn, precision=lax.Precision.HIGHEST,
    )
    pat = np.asarray(pat)
    out_shape = eqn.outvars[0].aval.shape
    # pat has the output layout with C_in * prod(window) features in the out feature dim.
    pat = np.moveaxis(pat, (out_spec[0], out_spec[1]), (0, 1))  # (N, F, *spatial)
    n_batch = pat.shape[0]
    out_idx = np.arange(int(np.prod(out_shape))).reshape(out_shape)
    out_idx = np.moveaxis(out_idx, (out_spec[0], out_spec[1]), (0, 1))  # (N, O, *spatial)
    n_o = out_idx.shape[1]
    # lhs dependence: out[n, o, s] reads every patch feature of (n, s) (all o).
    src = _to_src(pat)
    src = src.reshape(pat.shape)
    o_rep = np.broadcast_to(out_idx[:, :, None], (n_batch, n_o, pat.shape[1]) + out_idx.shape[2:])
    s_rep = np.broadcast_to(src[:, None], o_rep.shape)
    ok = s_rep >= 0
    rel_l = ab.relation(o_rep[ok], s_rep[ok], out_idx.size, lhs.size)
    deps = [ab.apply_relation(rel_l, lhs.deps)]
    if rhs.has_deps:
        # rhs dependence: out[n, o, s] depends on kernel slice o (all in-channels, window).
        r_idx = np.moveaxis(np.arange(rhs.size).reshape(rhs.shape), rhs_spec[0], 0)
        r_groups = np.empty(rhs.size, np.int64)
        r_groups[r_idx.reshape(-1)] = np.repeat(np.arange(r_idx.shape[0]), r_idx[0].size)
        o_groups = np.empty(out_idx.size, np.int64)
        o_groups[out_idx.reshape(-1)] = np.broadcast_to(
            np.arange(n_o)[None, :, None], (n_batch, n_o, int(np.prod(out_idx.shape[2:])))
        ).reshape(-1)
        deps.append(_group_deps(o_groups, r_groups, n_o, rhs.deps))
    del lhs_c, n_sp
    return [_make(eqn, ab.union(*deps), np.ones(out_idx.size, bool))]


# -- calls and control flow -----------------------------------------------------------------
@rule("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint", "custom_lin",
      "shard_map")
def _call(interp, eqn, ins):
    p = eqn.params
    jaxpr = p.get("jaxpr", p.get("call_jaxpr"))
    if jaxpr is None:
        return None
    return interp.run_closed(jaxpr, ins)


@rule("custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr")
def _custom(interp, eqn, ins):
    if eqn.primitive.name in interp.expanding:
        # Nested inside the derivative rule of the same kind of call: the rule *evaluates* it
        # (on tangents it is linear), so its own program gives the pattern; expanding its
        # derivative rule again recursed without bound (optimistix wraps fn in jnp.asarray).
        inner = eqn.params.get("call_jaxpr") or eqn.params.get("fun_jaxpr")
        if inner is not None:
            return interp.run_closed(inner, ins)
    if not any(a.has_deps for a in ins):
        inner = eqn.params.get("call_jaxpr") or eqn.params.get("fun_jaxpr")
        if inner is not None:
            outs = interp.run_closed(inner, ins)
            return [ab.AbstractArray(o.shape, o.dtype, o.nz, None, o.value) for o in outs]
        return None
    return local_pattern_by_ad(interp, eqn, ins)


def _join_abstract(a: ab.AbstractArray, b: ab.AbstractArray) -> ab.AbstractArray:
    if a.known and b.known and np.array_equal(a.value, b.value):
        return a
    deps = ab.union(a.deps, b.deps)
    return ab.AbstractArray(a.shape, a.dtype, a.nz | b.nz, deps, None)


def _same(a: ab.AbstractArray, b: ab.AbstractArray) -> bool:
    if a.known != b.known:
        return False
    if a.known:
        return np.array_equal(a.value, b.value)
    if not np.array_equal(a.nz, b.nz):
        return False
    da, db = a.deps, b.deps
    if (da is None or da.nnz == 0) and (db is None or db.nnz == 0):
        return True
    if da is None or db is None:
        return False
    return da.nnz == db.nnz and (da != db).nnz == 0


def _widen(a: ab.AbstractArray, n_cols) -> ab.AbstractArray:
    if not a.has_deps:
        return ab.AbstractArray(a.shape, a.dtype, np.ones(a.size, bool))
    return all_to_all([a], [jax.ShapeDtypeStruct(a.shape, a.dtype)], n_cols)[0]


@rule("cond")
def _cond(interp, eqn, ins):
    index, ops = ins[0], ins[1:]
    branches = eqn.params["branches"]
    if index.known:
        i = int(np.clip(np.asarray(index.value), 0, len(branches) - 1))
        return interp.run_closed(branches[i], ops)
    results = None
    for br in branches:
        outs = interp.run_closed(br, ops)
        results = outs if results is None else [
            _join_abstract(a, b) for a, b in zip(results, outs, strict=True)
        ]
    return results


@rule("while")
def _while(interp, eqn, ins):
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cconsts, bconsts, carry = ins[:cn], ins[cn : cn + bn], list(ins[cn + bn :])
    cond, body = p["cond_jaxpr"], p["body_jaxpr"]
    budget = UNROLL_BUDGET // max(len(body.jaxpr.eqns), 1)
    for _ in range(budget):
        (c,) = interp.run_closed(cond, list(cconsts) + carry)
        if not c.known:
            break
        if not bool(np.asarray(c.value)):
            return carry
        carry = interp.run_closed(body, list(bconsts) + carry)
    return _fixed_point(interp, lambda cs: interp.run_closed(body, list(bconsts) + cs), carry)


def _fixed_point(interp, step, carry):
    for it in range(10 * WIDEN_AFTER):
        new = [_join_abstract(a, b) for a, b in zip(carry, step(carry), strict=True)]
        if all(_same(a, b) for a, b in zip(new, carry, strict=True)):
            return new
        carry = new
        if it == WIDEN_AFTER:
            carry = [_widen(a, interp.n_cols) for a in carry]
    return [_widen(a, interp.n_cols) for a in carry]


def _slice_leading(a: ab.AbstractArray, i: int) -> ab.AbstractArray:
    inner = a.size // a.shape[0]
    shape = a.shape[1:]
    if a.known:
        return ab.known(a.value[i])
    deps = a.deps[i * inner : (i + 1) * inner] if a.deps is not None else None
    return ab.AbstractArray(shape, a.dtype, a.nz[i * inner : (i + 1) * inner], deps)


def _stack_leading(items, n_cols) -> ab.AbstractArray:
    first = items[0]
    shape = (len(items),) + first.shape
    if all(x.known for x in items):
        return ab.known(np.stack([x.value for x in items]))
    nz = np.concatenate([x.nz for x in items])
    if any(x.has_deps for x in items):
        deps = sp.vstack([ab.deps_or_empty(x, n_cols) for x in items], format="csr")
    else:
        deps = None
    return ab.from_deps(shape, first.dtype, deps, nz) if first.differentiable else (
        ab.AbstractArray(shape, first.dtype, np.ones(nz.size, bool))
    )


@rule("scan")
def _scan(interp, eqn, ins):
    p = eqn.params
    nc, ncar, length = p["num_consts"], p["num_carry"], p["length"]
    consts, carry, xs = ins[:nc], list(ins[nc : nc + ncar]), ins[nc + ncar :]
    body = p["jaxpr"]
    order = range(length - 1, -1, -1) if p["reverse"] else range(length)
    if length * max(len(body.jaxpr.eqns), 1) <= UNROLL_BUDGET:
        ys_steps = [None] * length
        for i in order:
            x_i = [_slice_leading(x, i) for x in xs]
            outs = interp.run_closed(body, list(consts) + carry + x_i)
            carry, ys_steps[i] = list(outs[:ncar]), outs[ncar:]
        n_ys = len(eqn.outvars) - ncar
        ys = [
            _stack_leading([ys_steps[i][k] for i in range(length)], interp.n_cols)
            if length else unknown_like(eqn.outvars[ncar + k].aval)
            for k in range(n_ys)
        ]
        return carry + ys
    # Too long to unroll: one abstract slice standing for every iteration, carry fixed point.
    x_any = [_join_all_slices(x) for x in xs]
    step = lambda cs: interp.run_closed(body, list(consts) + cs + x_any)[:ncar]  # noqa: E731
    carry = _fixed_point(interp, step, carry)
    outs = interp.run_closed(body, list(consts) + carry + x_any)
    ys = [_repeat_leading(y, length) for y in outs[ncar:]]
    return carry + ys


def _repeat_leading(y: ab.AbstractArray, length: int) -> ab.AbstractArray:
    shape = (length,) + y.shape
    if y.known:
        return ab.known(np.broadcast_to(y.value, shape))
    idx = np.tile(np.arange(y.size, dtype=np.int64), length)
    deps = y.deps[idx] if y.deps is not None else None
    return ab.AbstractArray(shape, y.dtype, y.nz[idx], deps, None)


def _join_all_slices(x: ab.AbstractArray) -> ab.AbstractArray:
    """One abstract slice standing for every ``x[i]`` (union over the leading axis)."""
    length = x.shape[0]
    inner = x.size // max(length, 1)
    shape = x.shape[1:]
    if x.known:
        v = np.asarray(x.value)
        if length and (v == v[:1]).all():
            return ab.known(v[0])
        return ab.AbstractArray(shape, x.dtype, v.reshape(length, -1).any(axis=0) if length
                                else np.zeros(inner, bool))
    nz = x.nz.reshape(length, inner).any(axis=0)
    deps = None
    if x.deps is not None:
        rel = ab.relation(np.tile(np.arange(inner), length), np.arange(x.size), inner, x.size)
        deps = ab.apply_relation(rel, x.deps)
    return ab.from_deps(shape, x.dtype, deps, nz) if x.differentiable else (
        ab.AbstractArray(shape, x.dtype, np.ones(inner, bool))
    )


@rule("custom_linear_solve")
def _custom_linear_solve(interp, eqn, ins):
    lens = eqn.params["const_lengths"]
    n_consts = lens.matvec + lens.vecmat + lens.solve + lens.transpose_solve
    matvec_consts = ins[: lens.matvec]
    b = ins[n_consts:]
    # x = A⁻¹b: every x element may depend on every b element and on the matrix (matvec).
    return all_to_all(list(matvec_consts) + list(b), [v.aval for v in eqn.outvars],
                      interp.n_cols)


@rule("pure_callback", "io_callback")
def _callback(interp, eqn, ins):
    return interp.conservative(eqn, ins, reason="an opaque host callback")


# -- sparse (jax.experimental.sparse) primitives: inline their reference implementation -----
def sparse_reference_impl(prim):
    """The jnp-level reference implementation of a BCOO/BCSR primitive, if it has one."""
    name = prim.name
    if not (name.startswith("bcoo_") or name.startswith("bcsr_")):
        return None
    from jax.experimental.sparse import bcoo, bcsr

    for mod in (bcoo, bcsr):
        impl = getattr(mod, f"_{name}_impl", None)
        if impl is not None:
            return impl
    return None
