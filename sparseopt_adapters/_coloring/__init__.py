"""Graph coloring of sparsity patterns (see ``_api.py``): result, graphs, orders, compiled
kernels, decompression data."""

from ._api import color_hessian as color_hessian
from ._api import color_jacobian as color_jacobian
from ._api import coloring_from_colors as coloring_from_colors
from ._kernels import backend as backend
from ._orders import ORDERS as ORDERS
from ._result import HESSIAN_METHODS as HESSIAN_METHODS
from ._result import JACOBIAN_MODES as JACOBIAN_MODES
from ._result import ColoringResult as ColoringResult
from ._result import Substitution as Substitution
