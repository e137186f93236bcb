"""The one registry of sparsity rules: primitive name -> rule.

A rule is ``rule(interp, eqn, ins) -> list[AbstractArray] | None`` (``None``: not handled here,
the interpreter goes on down its fallback chain). Rule modules (``rules/*.py``) register with
the ``rule`` decorator; a second registration of the same primitive name is refused, so which
rule runs never depends on the order files are imported in.

Besides per-name rules, a *reference-implementation provider* maps a primitive object to a
jnp-level implementation the interpreter can trace and interpret instead (the
``jax.experimental.sparse`` primitives use this).

This module imports nothing from the interpreter or the rules: both import it.
"""

from __future__ import annotations

from collections.abc import Callable

RULES: dict[str, Callable] = {}
_IMPL_PROVIDERS: list[Callable] = []


class DuplicateRuleError(RuntimeError):
    """A second rule was registered for a primitive that already has one."""


def rule(*names: str):
    """Register the decorated function as the rule for each primitive in ``names``.

    Example:
        >>> from sparseopt_adapters._detection._registry import RULES, rule
        >>> @rule("my_new_primitive_for_doctest")
        ... def _r(interp, eqn, ins):
        ...     return None
        >>> "my_new_primitive_for_doctest" in RULES
        True
        >>> del RULES["my_new_primitive_for_doctest"]
    """

    def register(fn):
        for n in names:  # check every name first: a refused call registers nothing
            if n in RULES:
                old = RULES[n]
                raise DuplicateRuleError(
                    f"primitive '{n}' already has the rule {old.__module__}.{old.__qualname__}; "
                    f"refusing a second one ({fn.__module__}.{fn.__qualname__}). Merge the two "
                    "into one rule: the registry keeps exactly one rule per primitive."
                )
        if len(set(names)) != len(names):
            raise DuplicateRuleError(f"rule() got a primitive name twice: {names}")
        for n in names:
            RULES[n] = fn
        return fn

    return register


def register_impl_provider(provider: Callable) -> Callable:
    """Register ``provider(primitive) -> impl | None`` (a jnp-level implementation)."""
    _IMPL_PROVIDERS.append(provider)
    return provider


def reference_impl(primitive):
    """The first registered reference implementation of ``primitive``, or ``None``."""
    for provider in _IMPL_PROVIDERS:
        impl = provider(primitive)
        if impl is not None:
            return impl
    return None


def lookup(name: str):
    return RULES.get(name)
