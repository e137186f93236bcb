"""Checks of sparse derivatives against dense JAX autodiff and random products."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ._compressed import SparseHessian, SparseJacobian, SparseLagrangianHessian
from ._products import hvp_fun


class DerivativeMismatchError(AssertionError):
    """A sparse derivative disagrees with dense autodiff (see [`check_jacobian`][])."""


@dataclasses.dataclass(frozen=True)
class DerivativeCheck:
    """Result of [`check_jacobian`][] / [`check_hessian`][].

    Errors are absolute; ``scale`` is the largest magnitude they are compared against (the
    largest entry of the dense derivative, or of the reference products), and the check
    passes when every error is at most ``rtol * scale + atol``.

    Attributes:
        max_error_dense: largest ``|sparse - dense|`` over all entries (``None`` when the
            dense derivative was skipped as too large).
        max_error_outside: largest ``|dense|`` outside the pattern (a missed nonzero), or
            ``None`` when skipped.
        max_error_products: largest error of ``J v`` against `jax.jvp` (and ``uᵀ J``
            against `jax.vjp`; ``H v`` against forward-over-reverse for Hessians).
        scale: the magnitude the errors are relative to.
        tolerance: ``rtol * scale + atol``.
        passed: whether every error is within ``tolerance``.
    """

    max_error_dense: float | None
    max_error_outside: float | None
    max_error_products: float
    scale: float
    tolerance: float
    passed: bool

    def __repr__(self) -> str:
        def f(v):
            return "skipped" if v is None else f"{v:.3g}"

        return (
            f"DerivativeCheck(passed={self.passed}, dense={f(self.max_error_dense)}, "
            f"outside_pattern={f(self.max_error_outside)}, "
            f"products={f(self.max_error_products)}, tolerance={self.tolerance:.3g})"
        )


def _finish(name, obj, dense_err, outside, prod_err, scale, rtol, atol, raise_on_error):
    tol = rtol * scale + atol
    errs = [e for e in (dense_err, outside, prod_err) if e is not None]
    passed = bool(all(np.isfinite(e) and e <= tol for e in errs))
    res = DerivativeCheck(dense_err, outside, prod_err, scale, tol, passed)
    if raise_on_error and not passed:
        hint = ""
        if outside is not None and outside > tol:
            hint = (" The dense derivative is nonzero outside the pattern: the pattern is "
                    "missing entries (pass a correct pattern= or report the detection gap).")
        raise DerivativeMismatchError(
            f"{name} of {obj!r} disagrees with dense JAX autodiff: {res!r}.{hint}"
        )
    return res


def check_jacobian(
    jac: SparseJacobian,
    *args,
    n_probes: int = 4,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    dense_limit: int = 4_000_000,
    seed: int = 0,
    raise_on_error: bool = False,
) -> DerivativeCheck:
    """Compare a [`SparseJacobian`][] at ``args`` with dense AD and random products.

    The dense check (`jax.jacfwd`) runs when ``m * n <= dense_limit``; the product check
    always runs: ``J v`` for ``n_probes`` random ``v`` against `jax.jvp`, and ``uᵀ J``
    against `jax.vjp`.

    Args:
        jac: the sparse Jacobian.
        *args: the arguments to evaluate at.
        n_probes: random vectors per product check.
        rtol, atol: tolerance ``rtol * scale + atol``.
        dense_limit: skip the dense comparison above this many entries.
        seed: seed of the probes.
        raise_on_error: raise [`DerivativeMismatchError`][] instead of returning a failed
            check.

    Returns:
        A [`DerivativeCheck`][].

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> import sparseopt_adapters as sa
        >>> f = lambda x: x[1:] * x[:-1]
        >>> p = sa.SparsityPattern.from_dense(np.eye(4, 5) + np.eye(4, 5, k=1))
        >>> jac = sa.sparse_jacobian(f, jnp.ones(5), pattern=p)
        >>> sa.check_jacobian(jac, jnp.arange(5.0)).passed
        True
    """
    if not isinstance(jac, SparseJacobian):
        raise TypeError(
            f"check_jacobian needs a SparseJacobian (from sa.sparse_jacobian), got "
            f"{type(jac).__name__}."
        )
    m, n = jac.pattern.shape
    vals = np.asarray(jac.values(*args))
    sparse = jac.to_scipy(vals, "csr")
    dense_err = outside = None
    scale = float(np.max(np.abs(vals))) if vals.size else 0.0
    rng = np.random.default_rng(seed)
    vs = rng.standard_normal((n_probes, n))
    us = rng.standard_normal((n_probes, m))
    want_dense = m * n <= dense_limit

    def forward(*a):
        x, g = jac._flat.split(a)
        jv = jax.vmap(lambda v: jax.jvp(g, (x,), (v.astype(x.dtype),))[1])(jnp.asarray(vs))
        dense = jax.jacfwd(g)(x) if want_dense else None
        return jv, dense

    def reverse(*a):
        x, g = jac._flat.split(a)
        y, pull = jax.vjp(g, x)
        return jax.vmap(lambda u: pull(u.astype(y.dtype))[0])(jnp.asarray(us))

    # a function may support only one mode (while_loop: forward; custom_vjp: reverse)
    jv, dense = _try(lambda: jax.jit(forward)(*args), (None, None))
    uj = _try(lambda: jax.jit(reverse)(*args), None)
    if dense is None and want_dense and uj is not None:

        def dense_rev(*a):
            x, g = jac._flat.split(a)
            return jax.jacrev(g)(x)

        dense = _try(lambda: jax.jit(dense_rev)(*args), None)
    if jv is None and uj is None:
        raise ValueError(
            f"check_jacobian: neither jax.jvp nor jax.vjp can differentiate the function of "
            f"{jac!r}, so there is nothing to compare with."
        )
    if dense is not None and m * n:
        dense = np.asarray(dense).reshape(m, n)
        mask = jac.pattern.todense()
        dense_err = float(np.max(np.abs(sparse.toarray() - dense)))
        outside = float(np.max(np.abs(np.where(mask, 0.0, dense))))
        scale = max(scale, float(np.max(np.abs(dense))))
    prod_err = 0.0
    if n_probes and m and n:
        if jv is not None:
            jv = np.asarray(jv)
            prod_err = max(prod_err, float(np.max(np.abs((sparse @ vs.T).T - jv))))
            scale = max(scale, float(np.max(np.abs(jv))))
        if uj is not None:
            uj = np.asarray(uj)
            prod_err = max(prod_err, float(np.max(np.abs((sparse.T @ us.T).T - uj))))
            scale = max(scale, float(np.max(np.abs(uj))))
    return _finish("The Jacobian", jac, dense_err, outside, prod_err, scale, rtol, atol,
                   raise_on_error)


def _try(thunk, default):
    """``thunk()``, or ``default`` when JAX cannot differentiate in that mode."""
    try:
        return thunk()
    except (TypeError, ValueError, NotImplementedError) as e:
        msg = str(e)
        if any(k in msg for k in ("differentiation", "autodiff", "Transpose rule", "jvp",
                                  "not implemented")):
            return default
        raise


def check_hessian(
    hess: SparseHessian | SparseLagrangianHessian,
    *args,
    n_probes: int = 4,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    dense_limit: int = 4_000_000,
    seed: int = 0,
    raise_on_error: bool = False,
) -> DerivativeCheck:
    """Compare a [`SparseHessian`][] at ``args`` with `jax.hessian` and random HVPs.

    For a [`SparseLagrangianHessian`][] pass ``(x, sigma, lam, *args)``.

    Args:
        hess: the sparse Hessian.
        *args: the arguments to evaluate at.
        n_probes, rtol, atol, dense_limit, seed, raise_on_error: as in [`check_jacobian`][].

    Returns:
        A [`DerivativeCheck`][].

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> import sparseopt_adapters as sa
        >>> f = lambda x: jnp.sum(x[1:] ** 2 * x[:-1])
        >>> p = sa.SparsityPattern.from_dense(np.eye(5) + np.eye(5, k=1) + np.eye(5, k=-1))
        >>> check = sa.check_hessian(sa.sparse_hessian(f, jnp.ones(5), pattern=p), jnp.arange(5.0))
        >>> check.passed, check.max_error_dense
        (True, 0.0)
    """
    if isinstance(hess, SparseLagrangianHessian):
        hess = hess.hessian
    if not isinstance(hess, SparseHessian):
        raise TypeError(
            f"check_hessian needs a SparseHessian (from sa.sparse_hessian), got "
            f"{type(hess).__name__}."
        )
    n = hess.pattern.shape[0]
    vals = np.asarray(hess.values(*args))
    sparse = hess.to_scipy(vals, "csr")
    dense_err = outside = None
    scale = float(np.max(np.abs(vals))) if vals.size else 0.0
    vs = np.random.default_rng(seed).standard_normal((n_probes, n))
    want_dense = n * n <= dense_limit

    def reference(*a):
        x, g = hess._flat.split(a)

        def fs(z):
            return g(z)[0]

        # the reference products and dense Hessian in the object's HVP mode (a custom_vjp
        # objective has reverse mode only)
        hvp = hvp_fun(g, x, hess.hvp_mode)
        hv = jax.vmap(lambda v: hvp(v.astype(x.dtype)))(jnp.asarray(vs))
        if not want_dense:
            return hv, None
        outer = jax.jacrev if hess.hvp_mode == "rev_over_rev" else jax.jacfwd
        return hv, outer(jax.grad(fs))(x)

    hv, dense = jax.jit(reference)(*args)
    if dense is not None and n:
        dense = np.asarray(dense).reshape(n, n)
        mask = hess.pattern.todense()
        dense_err = float(np.max(np.abs(sparse.toarray() - dense)))
        outside = float(np.max(np.abs(np.where(mask, 0.0, dense))))
        scale = max(scale, float(np.max(np.abs(dense))))
    prod_err = 0.0
    if n_probes and n:
        hv = np.asarray(hv)
        prod_err = float(np.max(np.abs((sparse @ vs.T).T - hv)))
        scale = max(scale, float(np.max(np.abs(hv))))
    return _finish("The Hessian", hess, dense_err, outside, prod_err, scale, rtol, atol,
                   raise_on_error)
