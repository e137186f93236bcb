"""Primitive audit (issue 15, item 3): every primitive JAX defines is accounted for."""

import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparseopt_adapters as sa
from sparseopt_adapters._detection import _audit
from sparseopt_adapters._detection.rules.conservative import CONSERVATIVE, markdown_table

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "snippets"


def test_every_jax_primitive_has_a_rule_or_a_documented_reason():
    missing = _audit.unaccounted()
    assert not missing, (
        f"JAX {jax.__version__} defines primitives with neither a sparsity rule nor an entry in "
        f"rules/conservative.py: {missing}. Add a rule (rules/<family>.py) or a documented "
        "reason."
    )


def test_audit_sees_the_families_it_claims():
    prims = _audit.jax_primitives()
    for name in ("add", "gather", "scan", "while", "cond", "dot_general", "cholesky",
                 "conv_general_dilated", "tile", "split", "custom_jvp_call", "psum",
                 "bcoo_dot_general"):
        assert name in prims, name
    assert len(prims) > 200


def test_every_conservative_entry_is_a_real_primitive_or_version_specific():
    prims = _audit.jax_primitives()
    # Entries of other JAX versions are allowed, but most must exist here.
    assert sum(n in prims for n in CONSERVATIVE) >= 0.8 * len(CONSERVATIVE)
    assert all(len(reason) > 20 for reason in CONSERVATIVE.values())


def test_documented_list_is_the_table():
    text = (DOCS / "conservative_primitives.md").read_text()
    assert text == markdown_table(), (
        "docs/snippets/conservative_primitives.md is out of date: regenerate it with "
        "python -c 'from sparseopt_adapters._detection.rules.conservative import "
        "markdown_table as t; print(t(), end=\"\")' > docs/snippets/conservative_primitives.md"
    )


def test_conservative_rule_warns_with_its_reason():
    f = lambda x: jax.pure_callback(lambda v: np.asarray(v), jax.ShapeDtypeStruct((3,), x.dtype), x)
    with pytest.warns(sa.SparsityWarning, match="opaque host callback"):
        p = sa.jacobian_sparsity(f, jnp.ones(3))
    assert p.nnz == 9


def test_no_warning_from_rules_added_for_the_audit():
    # Primitives that carry no derivative give empty patterns, silently.
    def f(x):
        k = jax.random.key(0)
        noise = jax.random.normal(k, (3,))
        return x * noise + jnp.arange(3.0)

    with warnings.catch_warnings():
        warnings.simplefilter("error", sa.SparsityWarning)
        p = sa.jacobian_sparsity(f, jnp.ones(3))
    assert p.nnz == 3
