"""Linear algebra: factorizations, triangular solves, FFTs, linear solves."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .. import _abstract as ab
from .. import _compat
from .. import _intervals as iv
from .._common import all_to_all, group_deps, make
from .._registry import rule


# -- grouped (structured conservative) rules -------------------------------------------------
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
                group_deps(og, _batch_groups(a.shape, len(batch)), n_groups, a.deps)
                for a in ins
                if a.has_deps and tuple(a.shape[: len(batch)]) == tuple(batch)
            ]
        )
        results.append(make(eqn, deps, np.ones(int(np.prod(shape, dtype=np.int64)), bool), k))
    return results


rule(*("householder_product geqrf geqp3 eigh eig svd schur hessenberg "
        "tridiagonal tridiagonal_solve cholesky_update lu_pivots_to_permutation ormqr "
        "symmetric_product").split())(
    _batched_all_to_all)


@rule("fft")
def _fft(interp, eqn, ins):
    n = len(eqn.params["fft_lengths"])
    return _batched_all_to_all(interp, eqn, ins, n_core_in=n)


@rule("custom_linear_solve")
def _custom_linear_solve(interp, eqn, ins):
    """x = A⁻¹b, differentiated as JAX does: ``dx = solve(db - dA·x)``. The pattern runs the
    ``solve`` program on ``b`` and on the ``matvec`` program's dependence on its constants
    (the matrix), so a batched or structured solve keeps its structure; the solve's own
    constants (factors) carry no derivative in JAX's rule."""
    n_matvec, n_vecmat, n_solve, n_tsolve = _compat.linear_solve_const_lengths(eqn.params)
    n_consts = n_matvec + n_vecmat + n_solve + n_tsolve
    matvec_consts = ins[:n_matvec]
    solve_consts = ins[n_matvec + n_vecmat:n_matvec + n_vecmat + n_solve]
    b = ins[n_consts:]
    jaxprs = eqn.params.get("jaxprs")
    try:
        strip = lambda a: ab.AbstractArray(a.shape, a.dtype, a.nz, None, a.value, a.lo, a.hi)  # noqa: E731
        fixed = [strip(c) for c in solve_consts]
        outs = interp.run_closed(jaxprs.solve, fixed + list(b))
        if any(c.has_deps for c in matvec_consts):
            x0 = [ab.AbstractArray(a.shape, a.dtype, np.ones(a.size, bool)) for a in outs]
            ax = interp.run_closed(jaxprs.matvec, list(matvec_consts) + x0)
            via_a = interp.run_closed(jaxprs.solve, fixed + ax)
            outs = [ab.join(o, v) for o, v in zip(outs, via_a, strict=True)]
        return [make(eqn, o.deps, np.ones(o.size, bool), k) for k, o in enumerate(outs)]
    except Exception:  # an unusual solve program: every x element on every b and matrix entry
        return all_to_all(list(matvec_consts) + list(b), [v.aval for v in eqn.outvars],
                          interp.n_cols)




# -- structured factorizations ---------------------------------------------------------------
# Relations on one (rows × cols) matrix, tiled block-diagonally over the batch. Each is
# "output entry <- input entries" as index pairs, applied to dependencies in turn (never
# multiplied together: the composed relation can be much larger than the result).
def _tile(rel: sp.csr_array, n_batch: int) -> sp.csr_array:
    if n_batch == 1:
        return rel
    return ab.as_bool_csr(sp.kron(sp.eye(n_batch, format="csr", dtype=bool), rel, format="csr"))


def _prefix(rows: int, cols: int, axis: int, reverse: bool = False) -> sp.csr_array:
    """out[i, j] <- in[a, j] for a <= i (axis 0) / in[i, b] for b <= j (axis 1); ``reverse``
    takes a >= i / b >= j instead."""
    n = rows if axis == 0 else cols
    k, a = (np.triu_indices(n) if reverse else np.tril_indices(n))  # pairs (k >= a) / (k <= a)
    other = cols if axis == 0 else rows
    o = np.arange(other)
    if axis == 0:
        out = (k[:, None] * cols + o[None, :]).reshape(-1)
        inn = (a[:, None] * cols + o[None, :]).reshape(-1)
    else:
        out = (o[:, None] * cols + k[None, :]).reshape(-1)
        inn = (o[:, None] * cols + a[None, :]).reshape(-1)
    return ab.relation(out, inn, rows * cols, rows * cols)


def _all_along(rows: int, cols: int, axis: int) -> sp.csr_array:
    """out[i, j] <- in[a, j] for every a (axis 0) / in[i, b] for every b (axis 1)."""
    i, a = np.meshgrid(np.arange(rows if axis == 0 else cols),
                       np.arange(rows if axis == 0 else cols), indexing="ij")
    i, a = i.reshape(-1), a.reshape(-1)
    other = cols if axis == 0 else rows
    o = np.arange(other)
    if axis == 0:
        out, inn = i[:, None] * cols + o[None, :], a[:, None] * cols + o[None, :]
    else:
        out, inn = o[None, :] * cols + i[:, None], o[None, :] * cols + a[:, None]
    return ab.relation(out.reshape(-1), inn.reshape(-1), rows * cols, rows * cols)


def _resize(src_rows, src_cols, rows, cols, col_map):
    """out[i, j] <- in[i', col_map(j)] for a (rows × cols) output of a (src_rows × src_cols)
    input whose rows were already united (any i' works: take row 0 of the source)."""
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    inn = np.asarray(col_map(j.reshape(-1)))
    return ab.relation((i * cols + j).reshape(-1), inn, rows * cols, src_rows * src_cols)


def _apply(rels, deps, n_batch):
    for r in rels:
        deps = ab.apply_relation(_tile(r, n_batch), deps)
    return deps


def _triangle(rows, cols, lower, n_batch, strict=False):
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    m = (i > j if strict else i >= j) if lower else (i < j if strict else i <= j)
    return np.tile(m.reshape(-1), n_batch)


@rule("cholesky")
def _cholesky(interp, eqn, ins):
    """L[i, j] (i >= j) depends on A[a, b] for a <= i, b <= j — the leading (max(i,j)+1)²
    block at most (the rectangle JAX's Cholesky JVP reads); L's upper triangle is zero."""
    (a,) = ins
    n = a.shape[-1]
    nb = a.size // max(n * n, 1)
    deps = _apply([_prefix(n, n, 0), _prefix(n, n, 1)], a.deps, nb)
    lower = _triangle(n, n, True, nb)
    return [make(eqn, ab.mask_rows(deps, lower), lower)]


def _column_causal(a, n_batch, rows, cols, keep):
    """Output entry (i, j) of a (rows × cols) factor <- column c of A (every row: pivoting or
    orthogonalisation mixes rows) wherever ``keep(i, j, c)``."""
    m, n = a.shape[-2:]
    i, j, c = np.meshgrid(np.arange(rows), np.arange(cols), np.arange(n), indexing="ij")
    k = keep(i, j, c)
    rel = ab.relation((i * cols + j)[k], c[k], rows * cols, m * n)  # row 0 of A's union
    return _apply([_all_along(m, n, 0), rel], a.deps, n_batch)


def _leading(k, offset):
    """Column j < k depends on columns 0..j; a wide matrix's trailing column j >= k only on
    columns 0..i-1+offset (the reflectors / eliminations before row i) and itself."""
    return lambda i, j, c: np.where(j < k, c <= j, (c < i + offset) | (c == j))


@rule("lu")
def _lu(interp, eqn, ins):
    """Packed LU with partial pivoting: column j of L\\U depends on columns 0..j of A, all rows
    (the row permutation depends on the values; JAX's LU JVP, L⁻¹·P·dA·U⁻¹, is column-causal).
    Pivots and permutation are integers."""
    (a,) = ins
    m, n = a.shape[-2:]
    nb = a.size // max(m * n, 1)
    deps = _column_causal(a, nb, m, n, _leading(min(m, n), 0))
    out = [make(eqn, deps, np.ones(a.size, bool), 0)]
    for k in range(1, len(eqn.outvars)):  # pivots / permutation: row indices in [0, m-1]
        shape, dtype = eqn.outvars[k].aval.shape, np.dtype(eqn.outvars[k].aval.dtype)
        out.append(iv.bounded(shape, dtype, 0, m - 1))
    return out


@rule("qr")
def _qr(interp, eqn, ins):
    """A = QR (Householder): column j of Q and of R depend on columns 0..j of A; R is upper
    triangular. With column pivoting the column order is data: dense per matrix."""
    (a,) = ins
    if eqn.params.get("pivoting", False):
        return _batched_all_to_all(interp, eqn, ins)
    m, n = a.shape[-2:]
    nb = a.size // max(m * n, 1)
    kk = min(m, n)
    outs = []
    for k, var in enumerate(eqn.outvars):
        shape = var.aval.shape
        if k >= 2 or not np.issubdtype(np.dtype(var.aval.dtype), np.inexact):
            outs.append(make(eqn, None, None, k))
            continue
        rows, cols = shape[-2:]
        if k == 1:  # R: upper triangular
            deps = _column_causal(a, nb, rows, cols, _leading(kk, 1))
            upper = _triangle(rows, cols, False, nb)
            outs.append(make(eqn, ab.mask_rows(deps, upper), upper, k))
        else:  # Q: column j < k on columns 0..j; the completing columns on all of A
            deps = _column_causal(a, nb, rows, cols,
                                  lambda i, j, c: np.where(j < kk, c <= j, True))
            outs.append(make(eqn, deps, np.ones(int(np.prod(shape)), bool), k))
    return outs


def _triangular_parts(n, lower, unit, transpose):
    """Index pairs (row, col) of A read as op(A)'s stored triangle."""
    r, c = np.tril_indices(n, -1 if unit else 0) if lower != transpose else np.triu_indices(
        n, 1 if unit else 0)
    return (c, r) if transpose else (r, c)


@rule("triangular_solve")
def _triangular_solve(interp, eqn, ins):
    """X = op(A)⁻¹B (left) or B·op(A)⁻¹ (right) by substitution: with op(A) lower and left
    side, X[i, k] depends on B[:i+1, k] and on op(A)'s triangle in rows 0..i (upper: rows
    i..n-1; right side: the same along columns)."""
    a, b = ins
    p = _compat.triangular_solve_params(eqn.params)
    left, lower, trans = p["left_side"], p["lower"], p["transpose_a"]
    n = a.shape[-1]
    m, k = b.shape[-2:]
    nb = b.size // max(m * k, 1)
    op_lower = lower != trans
    # op(A) entry (r, c) <- A[rc] ; forward substitution when the solve runs "downwards"
    forward = op_lower if left else not op_lower
    deps = []
    if b.has_deps:
        axis = 0 if left else 1
        deps.append(_apply([_prefix(m, k, axis, reverse=not forward)], b.deps, nb))
    if a.has_deps:
        rows_a, cols_a = _triangular_parts(n, lower, p["unit_diagonal"], False)
        # position of each stored entry in op(A): (r, c) = (row, col) or (col, row)
        r_op, c_op = (cols_a, rows_a) if trans else (rows_a, cols_a)
        line = r_op if left else c_op  # the row (left) / column (right) the entry sits on
        # X line t (row t on the left, column t on the right) reads lines <= t (forward) or
        # lines >= t (backward) of op(A)'s triangle.
        t = np.arange(n)
        reach = (line[None, :] <= t[:, None]) if forward else (line[None, :] >= t[:, None])
        tt, e = np.nonzero(reach)
        a_flat = rows_a[e] * n + cols_a[e]
        per_line = ab.relation(tt, a_flat, n, n * n)  # line t <- entries of A
        if left:  # X[i, kk] <- line i
            i, kk = np.meshgrid(np.arange(m), np.arange(k), indexing="ij")
            sel = i.reshape(-1)
        else:  # X[kk, j] <- line j
            i, kk = np.meshgrid(np.arange(m), np.arange(k), indexing="ij")
            sel = kk.reshape(-1)
        line_rel = ab.selection(sel, n)
        a_batch = a.size // max(n * n, 1)
        if a_batch == nb:
            rel = _tile(ab.as_bool_csr(line_rel @ per_line), nb)
            deps.append(ab.apply_relation(rel, a.deps))
        else:
            return _batched_all_to_all(interp, eqn, ins)
    return [make(eqn, ab.union(*deps), np.ones(b.size, bool))]
