"""``jax.experimental.sparse`` (BCOO/BCSR) primitives: their jnp-level reference
implementation is traced and interpreted in turn (unstored entries are zeros)."""

from __future__ import annotations

from .._registry import register_impl_provider


@register_impl_provider
def sparse_reference_impl(prim):
    """The jnp-level reference implementation of a BCOO/BCSR primitive, if it has one."""
    name = prim.name
    if not name.startswith(("bcoo_", "bcsr_", "coo_", "csr_")) and name != "todense":
        return None
    from jax.experimental.sparse import api, bcoo, bcsr, coo, csr

    for mod in (bcoo, bcsr, coo, csr, api):
        impl = getattr(mod, f"_{name}_impl", None)
        if impl is not None:
            return impl
    return None

