"""Sparsity rules by primitive family; importing this package registers all of them."""

from . import (  # noqa: F401
    conservative,
    control_flow,
    elementwise,
    linalg,
    movement,
    reductions,
    scatter_gather,
    sparse,
)
