"""Global sparsity detection: Jacobian and Hessian patterns of JAX functions.

Layout (imports flow one way: ``_api`` -> ``_interpreter`` -> ``_registry``; ``rules/*`` ->
``_registry``, never the interpreter):

- ``_abstract.py``: the abstract value (dependencies, known zeros, known values, intervals);
- ``_interpreter.py``: walks a jaxpr, constant folding, the fallback chain;
- ``_registry.py``: ``RULES`` and ``rule()``, which refuses a second rule for a primitive;
- ``_compat.py``: equation parameters across JAX versions (0.10.2 - 0.12);
- ``rules/``: one module per primitive family;
- ``_audit.py``: every primitive JAX defines, and the ones conservative on purpose.
"""

from ._api import hessian_sparsity as hessian_sparsity
from ._api import jacobian_sparsity as jacobian_sparsity
from ._interpreter import Interpreter as Interpreter
from ._registry import RULES as RULES
from ._registry import rule as rule

__all__ = ["jacobian_sparsity", "hessian_sparsity", "Interpreter", "RULES", "rule"]
