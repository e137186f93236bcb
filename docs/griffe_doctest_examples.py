"""Griffe extension for the API reference: render ``Example:`` doctest sections as code.

The package's docstrings use Google style with a singular ``Example:`` section holding doctests
(``>>> ...``). Griffe's Google parser knows only the plural ``Examples:`` as an examples section
(code blocks); a singular ``Example:`` becomes an admonition whose ``>>>`` lines Markdown would
render as nested block quotes. This rewrites the heading when the docstrings are loaded; the
source stays as it is.
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.M)


class DoctestExamples(griffe.Extension):
    """Parse ``Example:`` sections as ``Examples:`` (doctest code blocks)."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None and "Example:" in obj.docstring.value:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
