"""Primitives that are conservative on purpose, each with its reason.

Their rule is "every output element depends on every input element" with a
``SparsityWarning`` naming the primitive and the reason. The table is the documented list
(``docs/snippets/conservative_primitives.md`` is generated from it and a test checks the two
agree); the primitive audit (``tests/_detection/test_audit.py``) fails on a primitive that has
neither a rule nor an entry here.
"""

from __future__ import annotations

from .._registry import rule

_COLLECTIVE = ("a collective over a named mesh axis: detection interprets one program "
               "instance and cannot see what the other instances contribute")
_REFS = ("a mutable array reference (jax.new_ref): detection does not follow writes through "
         "references")
_OPAQUE = "an opaque call (foreign function / host code): its body is not a jaxpr"
_HIJAX = "an experimental hi-level-type (hijax) primitive that user programs do not emit"

CONSERVATIVE: dict[str, str] = {
    **{n: _COLLECTIVE for n in """
        all_gather all_gather_done all_gather_invariant all_gather_reduced
        all_gather_reduced_start all_gather_start all_to_all all_to_all_done all_to_all_start
        pbroadcast pbroadcast_done pbroadcast_start pbroadcast_dynamic pmax pmin ppermute
        ppermute_done ppermute_start precv preduced psend psum psum_done psum_invariant
        psum_invariant_start psum_start ragged_all_to_all reduce_scatter reduce_scatter_done
        reduce_scatter_start unreduced_psum unreduced_psum_start unreduced_reduce_scatter
        unreduced_reduce_scatter_start unreduced_pmax unreduced_pmin
        """.split()},
    **{n: _REFS for n in "new_ref empty_ref free_ref freeze accum_grad_in_ref".split()},
    "stage": _HIJAX,
    **{n: ("a cuSPARSE lowering target: produced only while lowering for a GPU, never in "
           "a traced jaxpr") for n in "coo_spmm coo_spmv csr_spmm csr_spmv".split()},
    "ffi_call": _OPAQUE,
    "pure_callback": "an opaque host callback",
    "io_callback": "an opaque host callback",
    "ragged_dot_general": ("a matrix product whose group sizes are data: which rows meet "
                           "which group is only known at run time"),
    "scaled_dot": ("a block-scaled low-precision product (scales broadcast over blocks): "
                   "treated as dense, it is not used in float64 programs"),
    "spsolve": ("a sparse direct solve (x = A⁻¹b): the inverse of a sparse matrix is dense in "
                "general"),
}


def _conservative_rule(interp, eqn, ins):
    return interp.conservative(eqn, ins, reason=CONSERVATIVE[eqn.primitive.name])


rule(*CONSERVATIVE)(_conservative_rule)


def markdown_table() -> str:
    """The documented list, as the Markdown table in ``docs/snippets``."""
    lines = ["<!-- generated from sparseopt_adapters/_detection/rules/conservative.py -->",
             "| primitive | why it is conservative on purpose |", "|---|---|"]
    by_reason: dict[str, list[str]] = {}
    for name, reason in CONSERVATIVE.items():
        by_reason.setdefault(reason, []).append(name)
    for reason, names in by_reason.items():
        lines.append(f"| {', '.join(f'`{n}`' for n in sorted(names))} | {reason} |")
    return "\n".join(lines) + "\n"
