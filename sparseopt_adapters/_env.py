"""Environment switches of the package, parsed in one place (read at import)."""

from __future__ import annotations

import os

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def env_flag(name: str) -> bool:
    """A boolean environment variable: unset, empty, 0, false, no or off is False; 1, true,
    yes or on is True (any case); anything else raises a `ValueError` naming the variable.

    Example:
        >>> import os
        >>> from sparseopt_adapters._env import env_flag
        >>> os.environ["SPARSEOPT_DEMO"] = "no"
        >>> env_flag("SPARSEOPT_DEMO")
        False
    """
    raw = os.environ.get(name, "").strip().lower()
    if raw in _FALSE:
        return False
    if raw in _TRUE:
        return True
    raise ValueError(
        f"{name}={os.environ[name]!r} is not a boolean: set it to 1/true/yes/on or "
        "0/false/no/off (or unset it)."
    )
