"""IPOPT (through cyipopt) with exact sparse derivatives of JAX functions.

Importing this module imports ``cyipopt`` (``pip install cyipopt-wheels``);
``import sparseopt_adapters`` alone does not.

Example:
    >>> import jax.numpy as jnp
    >>> import numpy as np
    >>> from sparseopt_adapters import ipopt
    >>> res = ipopt.minimize(lambda x: jnp.sum((x - 1.0) ** 2), np.zeros(3))
    >>> res.success, np.round(res.x, 6)
    (True, array([1., 1., 1.]))
"""

from ._impl import DEFAULT_OPTIONS as DEFAULT_OPTIONS
from ._impl import Problem as Problem
from ._impl import minimize as minimize
