"""Linear algebra: factorizations, triangular solves, FFTs, linear solves."""

from __future__ import annotations

import numpy as np

from .. import _abstract as ab
from .. import _compat
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


rule(*("cholesky lu qr householder_product geqrf geqp3 eigh eig svd schur hessenberg "
        "tridiagonal tridiagonal_solve cholesky_update lu_pivots_to_permutation ormqr "
        "symmetric_product").split())(
    _batched_all_to_all)


@rule("fft")
def _fft(interp, eqn, ins):
    n = len(eqn.params["fft_lengths"])
    return _batched_all_to_all(interp, eqn, ins, n_core_in=n)


@rule("triangular_solve")
def _triangular_solve(interp, eqn, ins):
    a, b = ins
    left = _compat.triangular_solve_params(eqn.params)["left_side"]
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
    deps_b = group_deps(groups, groups, n_batch * width, b.deps)
    a_groups = _batch_groups(a.shape, nb)
    deps_a = group_deps(_batch_groups(b.shape, nb), a_groups, n_batch, a.deps)
    return [make(eqn, ab.union(deps_a, deps_b), np.ones(b.size, bool))]


@rule("custom_linear_solve")
def _custom_linear_solve(interp, eqn, ins):
    n_matvec, n_vecmat, n_solve, n_tsolve = _compat.linear_solve_const_lengths(eqn.params)
    n_consts = n_matvec + n_vecmat + n_solve + n_tsolve
    matvec_consts = ins[:n_matvec]
    b = ins[n_consts:]
    # x = A⁻¹b: every x element may depend on every b element and on the matrix (matvec).
    return all_to_all(list(matvec_consts) + list(b), [v.aval for v in eqn.outvars],
                      interp.n_cols)


