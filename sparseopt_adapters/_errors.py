"""Exceptions and warnings of sparseopt_adapters."""


class SparsityWarning(UserWarning):
    """Detection fell back to a conservative (possibly loose) pattern.

    Silence with ``warnings.filterwarnings("ignore", category=sa.SparsityWarning)``.
    """


class DenseColoringWarning(UserWarning):
    """Coloring needs (nearly) as many colors as a dense derivative: sparse AD does not pay.

    Silence with ``warnings.filterwarnings("ignore", category=sa.DenseColoringWarning)``.
    """
