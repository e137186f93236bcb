"""The abstract interpreter: walks a jaxpr with an ``AbstractArray`` per variable.

It knows no primitive by name (that is the rules' job, looked up in ``_registry``); it owns
constant folding, the fallback chain for primitives without a rule, and
``local_pattern_by_ad`` (the pattern of one equation from its own JVP/VJP rule, which is how
``custom_jvp``/``custom_vjp`` calls are handled). Rules receive the interpreter as their first
argument and call back into it (``run_closed``, ``local_pattern_by_ad``, ``conservative``), so
no rule module imports this one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import jax
import numpy as np
import scipy.sparse as sp

from .._errors import SparsityWarning
from . import _abstract as ab
from . import _compat
from ._common import (
    all_to_all,
    bind_eqn,
    identity_block,
    identity_cols,
    is_inexact,
    np_dtype,
    shape_struct,
    to_known,
    unknown_like,
)
from ._fold import numpy_fold
from ._registry import lookup, reference_impl

# Primitives never constant-folded (side effects or costs that folding would hide).
NO_FOLD = frozenset({"pure_callback", "io_callback", "debug_callback", "debug_print"})


class Interpreter:
    """Abstract interpreter over jaxprs, with ``n_cols`` input variables."""

    def __init__(self, n_cols: int, expanding: frozenset = frozenset(), warned=None):
        self.n_cols = int(n_cols)
        self.expanding = expanding
        self.warned = set() if warned is None else warned

    # -- jaxpr walking ------------------------------------------------------------------
    def run(self, jaxpr, consts: Sequence, args: Sequence) -> list[ab.AbstractArray]:
        env: dict = {}

        def read(v):
            if _compat.is_literal(v):
                return to_known(_compat.literal_value(v))
            return env[v]

        for v, a in zip(jaxpr.constvars, consts, strict=True):
            env[v] = a
        for v, a in zip(jaxpr.invars, args, strict=True):
            env[v] = a
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.eqn(eqn, ins)
            for v, o in zip(eqn.outvars, outs, strict=True):
                if not _compat.is_dropvar(v):
                    env[v] = o
        return [read(v) for v in jaxpr.outvars]

    def run_closed(self, closed, args: Sequence) -> list[ab.AbstractArray]:
        """Run a closed jaxpr (its constants are known values) or an open one."""
        jaxpr, consts = _compat.closed_parts(closed)
        return self.run(jaxpr, [to_known(c) for c in consts], args)

    # -- one equation -------------------------------------------------------------------
    def eqn(self, eqn, ins: list[ab.AbstractArray]) -> list[ab.AbstractArray]:
        name = eqn.primitive.name
        if all(a.known for a in ins) and not eqn.effects and name not in NO_FOLD:
            values = [a.value for a in ins]
            try:
                folded = numpy_fold(eqn, values)
            except Exception:
                folded = None
            if folded is None:
                folded = fold(eqn, values)
            if folded is not None:
                return folded
        rule = lookup(name)
        if rule is not None:
            try:
                outs = rule(self, eqn, ins)
            except Exception as e:  # never an exception to the user: sound, with a warning
                return self.conservative(
                    eqn, ins, reason=f"an internal error in its rule ({type(e).__name__}: "
                    f"{str(e)[:120]}; please report it)")
            if outs is not None:
                return outs
        if not any(a.has_deps for a in ins) or not any(is_inexact(v.aval) for v in eqn.outvars):
            return [unknown_like(v.aval) for v in eqn.outvars]
        return self.fallback(eqn, ins)

    def fallback(self, eqn, ins):
        name = eqn.primitive.name
        impl = reference_impl(eqn.primitive)
        if impl is not None:
            closed = jax.make_jaxpr(lambda *xs: impl(*xs, **eqn.params))(
                *[shape_struct(v.aval) for v in eqn.invars]
            )
            outs = self.run_closed(closed, ins)
            return outs if eqn.primitive.multiple_results else outs[:1]
        if name not in self.expanding:
            try:
                return self.local_pattern_by_ad(eqn, ins)
            except _NoAD:
                pass
        return self.conservative(eqn, ins, reason="no sparsity rule")

    def conservative(self, eqn, ins, reason: str):
        name = eqn.primitive.name
        if name not in self.warned:
            self.warned.add(name)
            warnings.warn(
                f"sparsity detection has {reason} for primitive '{name}': every output of it "
                "is assumed to depend on every input (sound, possibly dense). Silence with "
                "warnings.filterwarnings('ignore', category=sparseopt_adapters.SparsityWarning).",
                SparsityWarning,
                stacklevel=4,
            )
        return all_to_all(ins, [v.aval for v in eqn.outvars], self.n_cols)

    def local_pattern_by_ad(self, eqn, ins):
        """Pattern of one equation from its own derivative rule (see ``local_pattern_by_ad``)."""
        return local_pattern_by_ad(self, eqn, ins)


def fold(eqn, values):
    """Evaluate an equation on concrete inputs (all known), or ``None`` if that fails."""
    try:
        outs = bind_eqn(eqn, *values)
    except Exception:
        return None
    return [to_known(o) for o in outs]


class _NoAD(Exception):
    pass


# Primitives never constant-folded (side effects or costs that folding would hide).
NO_FOLD = frozenset({"pure_callback", "io_callback", "debug_callback", "debug_print"})


def local_pattern_by_ad(interp: Interpreter, eqn, ins):
    """Pattern of one equation from its own derivative rule (JVP, else VJP), interpreted.

    This is how ``custom_jvp``/``custom_vjp`` functions get the pattern of their derivative
    rule rather than of their primal, and how primitives without a dedicated rule still get a
    structured pattern when their JVP is written in terms of primitives that have one.
    """
    diff = [i for i, a in enumerate(ins) if a.has_deps and is_inexact(eqn.invars[i].aval)]
    avals = [eqn.invars[i].aval for i in range(len(ins))]
    sizes = [ins[i].size for i in diff]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    n_local = int(offsets[-1])
    primal_args = [shape_struct(a) for a in avals]

    def substitute(primals, dxs):
        full = list(primals)
        for i, d in zip(diff, dxs, strict=True):
            full[i] = d
        return full

    out_avals = [v.aval for v in eqn.outvars]
    diff_out = [k for k, a in enumerate(out_avals) if is_inexact(a)]
    primal_ins = [ab.AbstractArray(a.shape, a.dtype, a.nz, None, a.value) for a in ins]
    expanding = interp.expanding | {eqn.primitive.name}
    inner = Interpreter(n_local, expanding, interp.warned)

    local = None
    if eqn.primitive.name != "custom_vjp_call":
        try:

            def jvp_fn(primals, tangents):
                f = lambda *dx: bind_eqn(eqn, *substitute(primals, dx))
                return jax.jvp(f, [primals[i] for i in diff], list(tangents))[1]

            closed = jax.make_jaxpr(jvp_fn)(
                primal_args, [shape_struct(avals[i]) for i in diff]
            )
            tangent_ins = [
                identity_block(ins[i], offsets[k], n_local) for k, i in enumerate(diff)
            ]
            outs = inner.run_closed(closed, primal_ins + tangent_ins)
            local = {k: outs[k].deps for k in diff_out}
        except Exception:
            local = None
    if local is None:
        try:

            def vjp_fn(primals, cts):
                f = lambda *dx: bind_eqn(eqn, *substitute(primals, dx))
                _, pullback = jax.vjp(f, *[primals[i] for i in diff])
                full_cts = [
                    cts[diff_out.index(k)] if k in diff_out else np.zeros(a.shape, a.dtype)
                    for k, a in enumerate(out_avals)
                ]
                return pullback(full_cts)

            closed = jax.make_jaxpr(vjp_fn)(
                primal_args, [shape_struct(out_avals[k]) for k in diff_out]
            )
            out_sizes = [int(np.prod(out_avals[k].shape, dtype=np.int64)) for k in diff_out]
            out_off = np.concatenate([[0], np.cumsum(out_sizes)]).astype(np.int64)
            vinner = Interpreter(int(out_off[-1]), expanding, interp.warned)
            ct_ins = [
                ab.AbstractArray(
                    out_avals[k].shape,
                    np_dtype(out_avals[k]),
                    np.ones(out_sizes[j], bool),
                    identity_cols(out_sizes[j], out_off[j], int(out_off[-1])),
                )
                for j, k in enumerate(diff_out)
            ]
            in_cts = vinner.run_closed(closed, primal_ins + ct_ins)
            stacked = sp.vstack([ab.deps_or_empty(c, int(out_off[-1])) for c in in_cts]).T
            stacked = ab.as_bool_csr(stacked)
            local = {
                k: stacked[out_off[j] : out_off[j + 1]] for j, k in enumerate(diff_out)
            }
        except Exception as e:
            raise _NoAD() from e
    in_deps = sp.vstack([ins[i].deps for i in diff]).tocsr()
    results = []
    for k, aval in enumerate(out_avals):
        if k not in diff_out or local[k] is None:
            results.append(unknown_like(aval))
            continue
        deps = ab.apply_relation(ab.as_bool_csr(local[k]), in_deps)
        size = int(np.prod(aval.shape, dtype=np.int64))
        results.append(ab.from_deps(aval.shape, np_dtype(aval), deps, np.ones(size, bool)))
    return results


