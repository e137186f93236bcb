"""scipy.optimize with exact sparse derivatives of JAX functions.

``from sparseopt_adapters import scipy as sa_scipy`` imports ``scipy.optimize``;
``import sparseopt_adapters`` alone does not.

- [`minimize`][sparseopt_adapters.scipy.minimize]: ``scipy.optimize.minimize`` (default
  ``trust-constr``) with the gradient, a colored sparse Hessian and constraints carrying sparse
  Jacobians and exact ``hess(x, v)``.
- [`least_squares`][sparseopt_adapters.scipy.least_squares]: ``scipy.optimize.least_squares``
  with a colored sparse Jacobian and LSMR tolerances that do not stall (a dense Jacobian and
  scipy's exact trust-region solver up to `EXACT_MAX_N` variables).
- [`derivatives`][sparseopt_adapters.scipy.derivatives]: ``fun``/``jac``/``hess``/``hessp``
  to hand to scipy yourself.
- [`nonlinear_constraint`][sparseopt_adapters.scipy.nonlinear_constraint]: a
  ``NonlinearConstraint`` with exact sparse derivatives.
"""

from __future__ import annotations

from sparseopt_adapters.scipy._impl import DEFAULT_TR_OPTIONS as DEFAULT_TR_OPTIONS
from sparseopt_adapters.scipy._impl import DENSE_LIMIT as DENSE_LIMIT
from sparseopt_adapters.scipy._impl import EXACT_MAX_N as EXACT_MAX_N
from sparseopt_adapters.scipy._impl import LSMR_MAXITER_FACTOR as LSMR_MAXITER_FACTOR
from sparseopt_adapters.scipy._impl import Derivatives as Derivatives
from sparseopt_adapters.scipy._impl import derivatives as derivatives
from sparseopt_adapters.scipy._impl import least_squares as least_squares
from sparseopt_adapters.scipy._impl import minimize as minimize
from sparseopt_adapters.scipy._impl import nonlinear_constraint as nonlinear_constraint

__all__ = [
    "DEFAULT_TR_OPTIONS",
    "DENSE_LIMIT",
    "EXACT_MAX_N",
    "LSMR_MAXITER_FACTOR",
    "Derivatives",
    "derivatives",
    "least_squares",
    "minimize",
    "nonlinear_constraint",
]
