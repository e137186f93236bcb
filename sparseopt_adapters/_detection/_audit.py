"""Primitive audit: every primitive JAX defines has a rule or is conservative on purpose.

Scope: the primitives defined in ``jax._src.lax`` (all of it: arithmetic, slicing, windowed
reductions, convolutions, control flow, linear algebra, FFT, collectives ...), the call and
custom-derivative machinery (``pjit``, ``ad_checkpoint``, ``custom_derivatives``,
``custom_batching``, ``core``, ``ad_util``), callbacks and debugging, random numbers, FFI and
``jax.experimental.sparse``. Accelerator kernel languages (Pallas, Mosaic, cuDNN), the state
discharge internals and shape-polymorphic export are out of scope: they do not appear in the
jaxpr of a differentiable CPU program. Primitives that a JAX version lacks are simply absent.

Example:
    >>> from sparseopt_adapters._detection._audit import unaccounted
    >>> unaccounted()
    []
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

from jax.extend.core import Primitive

from . import rules as _rules  # noqa: F401  (registers every rule)
from ._registry import RULES, reference_impl
from .rules.conservative import CONSERVATIVE

_MODULES = (
    "jax._src.core", "jax._src.pjit", "jax._src.ad_checkpoint", "jax._src.custom_derivatives",
    "jax._src.custom_batching", "jax._src.ad_util", "jax._src.callback", "jax._src.debugging",
    "jax._src.ffi", "jax._src.random", "jax._src.random.prng", "jax._src.random.core",
    "jax._src.shard_map", "jax._src.shard_alike", "jax.experimental.sparse",
)
_PREFIXES = ("jax._src.lax", "jax._src.random", "jax.experimental.sparse")


def _import_scope() -> None:
    import jax._src.lax as lax_pkg

    names = [m.name for m in pkgutil.walk_packages(lax_pkg.__path__, "jax._src.lax.")]
    for name in (*names, *_MODULES):
        try:
            importlib.import_module(name)
        except Exception:  # absent in this JAX version, or needs an accelerator library
            pass


def jax_primitives() -> dict[str, Primitive]:
    """Every primitive in scope, by name (see the module docstring for the scope)."""
    _import_scope()
    found: dict[str, Primitive] = {}
    for mod_name, mod in sorted(sys.modules.items()):
        if mod is None or not (mod_name in _MODULES or mod_name.startswith(_PREFIXES)):
            continue
        for value in list(vars(mod).values()):
            if isinstance(value, Primitive):
                found.setdefault(value.name, value)
    return found


def coverage() -> dict[str, str]:
    """How each primitive in scope is handled: ``rule``, ``conservative`` or ``reference``
    (a jnp-level reference implementation, interpreted), or ``none``."""
    out = {}
    for name, prim in jax_primitives().items():
        if name in CONSERVATIVE:
            out[name] = "conservative"
        elif name in RULES:
            out[name] = "rule"
        elif reference_impl(prim) is not None:
            out[name] = "reference"
        else:
            out[name] = "none"
    return out


def unaccounted() -> list[str]:
    """Primitives in scope with neither a rule nor an entry in ``CONSERVATIVE``."""
    return sorted(n for n, how in coverage().items() if how == "none")
