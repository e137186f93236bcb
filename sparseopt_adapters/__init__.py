"""Sparse derivatives of JAX functions, plugged into IPOPT, scipy.optimize and optimistix.

Importing the package turns on JAX float64 (``jax_enable_x64``): every solver it feeds works in
double precision, and IPOPT in float32 fails (see the README). Set the environment variable
``SPARSEOPT_NO_X64=1`` (or ``true``/``yes``/``on``) before importing to keep JAX's default;
``0``/``false``/``no``/``off`` keep float64 on, and any other value raises at import.

The solver adapters live in submodules and import their host package only when imported:
``sparseopt_adapters.ipopt``, ``sparseopt_adapters.scipy``, ``sparseopt_adapters.optimistix``.
"""

import jax as _jax

from ._env import env_flag as _env_flag

if not _env_flag("SPARSEOPT_NO_X64"):
    _jax.config.update("jax_enable_x64", True)

from ._cache import cache_info as cache_info
from ._cache import clear_cache as clear_cache
from ._cache import set_cache_size as set_cache_size
from ._check import DerivativeCheck as DerivativeCheck
from ._check import DerivativeMismatchError as DerivativeMismatchError
from ._check import check_hessian as check_hessian
from ._check import check_jacobian as check_jacobian
from ._coloring import ColoringResult as ColoringResult
from ._coloring import color_hessian as color_hessian
from ._coloring import color_jacobian as color_jacobian
from ._coloring import coloring_from_colors as coloring_from_colors
from ._compressed import SparseHessian as SparseHessian
from ._compressed import SparseJacobian as SparseJacobian
from ._compressed import SparseLagrangianHessian as SparseLagrangianHessian
from ._compressed import sparse_hessian as sparse_hessian
from ._compressed import sparse_jacobian as sparse_jacobian
from ._compressed import sparse_lagrangian_hessian as sparse_lagrangian_hessian
from ._detection import hessian_sparsity as hessian_sparsity
from ._detection import jacobian_sparsity as jacobian_sparsity
from ._errors import DenseColoringWarning as DenseColoringWarning
from ._errors import SparsityWarning as SparsityWarning
from ._gauss_newton import GaussNewton as GaussNewton
from ._gauss_newton import GaussNewtonResult as GaussNewtonResult
from ._gauss_newton import SparseDirectSolver as SparseDirectSolver
from ._gauss_newton import gauss_newton as gauss_newton
from ._gauss_newton import gauss_newton_step as gauss_newton_step
from ._gauss_newton import jacobian_operator as jacobian_operator
from ._gauss_newton import normal_operator as normal_operator
from ._parametrization import Fixed as Fixed
from ._parametrization import PatternMatrix as PatternMatrix
from ._parametrization import ravel_parameters as ravel_parameters
from ._parametrization import unwrap_fixed as unwrap_fixed
from ._pattern import SparsityPattern as SparsityPattern

__version__ = "0.1.0"
