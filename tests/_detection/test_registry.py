"""The registry keeps one rule per primitive, and imports flow one way (issue 15, item 5)."""

import ast
import pathlib

import pytest

from sparseopt_adapters._detection import _registry
from sparseopt_adapters._detection._registry import RULES, DuplicateRuleError, rule

PKG = pathlib.Path(__file__).resolve().parents[2] / "sparseopt_adapters" / "_detection"


def test_rule_refuses_a_second_registration():
    assert "gather" in RULES
    before = RULES["gather"]
    with pytest.raises(DuplicateRuleError, match="'gather' already has the rule"):
        rule("gather")(lambda interp, eqn, ins: None)
    assert RULES["gather"] is before


def test_refused_registration_leaves_no_partial_state():
    with pytest.raises(DuplicateRuleError):
        rule("_audit_test_new_name", "dynamic_slice")(lambda interp, eqn, ins: None)
    RULES.pop("_audit_test_new_name", None)
    assert "_audit_test_new_name" not in RULES


def test_once_registered_names_were_registered_twice_before():
    # gather, dynamic_slice and dynamic_update_slice each had two rules, file order deciding.
    for name in ("gather", "dynamic_slice", "dynamic_update_slice"):
        assert RULES[name].__module__.endswith("rules.scatter_gather")


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.add(base)
            for a in node.names:
                names.add(f"{base}.{a.name}" if base.endswith(".") is False else base + a.name)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_rules_never_import_the_interpreter():
    for path in sorted((PKG / "rules").glob("*.py")):
        imported = _imports(path)
        bad = {n for n in imported if "_interpreter" in n or "_api" in n}
        assert not bad, f"{path.name} imports {bad}: rules get the interpreter as an argument"


def test_interpreter_does_not_import_rules():
    imported = _imports(PKG / "_interpreter.py")
    assert not {n for n in imported if "rules" in n}, imported
    for helper in ("_registry.py", "_compat.py", "_common.py", "_abstract.py", "_fold.py"):
        imported = _imports(PKG / helper)
        assert not {n for n in imported if "_interpreter" in n or "rules" in n}, helper


def test_reference_impl_provider_for_sparse_primitives():
    from jax.experimental.sparse import bcoo

    assert _registry.reference_impl(bcoo.bcoo_dot_general_p) is not None
