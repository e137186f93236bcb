"""The result of a coloring: [`ColoringResult`][] and the substitution data it carries."""

from __future__ import annotations

import dataclasses

import numpy as np

from .._pattern import SparsityPattern, load_npz, matplotlib_spy, text_spy

JACOBIAN_MODES = ("forward", "reverse", "bidirectional")
HESSIAN_METHODS = ("star", "acyclic")
_ALL_MODES = JACOBIAN_MODES + HESSIAN_METHODS
_FORMAT = "sparseopt_adapters.ColoringResult/1"
_SAVED = ("rows", "cols", "shape", "mode", "order", "colors")  # (files of format 0 had no "format")


@dataclasses.dataclass(frozen=True, eq=False)
class Substitution:
    """Index data of substitution (acyclic) decompression; all arrays are numpy.

    Every 2-colored tree is rooted at a leaf and laid out in depth-first preorder as one row
    of a block; trees of similar size share a block (a row width of a power of two, at
    least one more than the tree size, padded with zeros). Entry ``(row, q)`` of block ``g``
    stands for ``sign * compressed[index]`` (a vertex's product with the tree's other
    color; ``index == len(compressed)`` is a zero pad). The value of a tree edge is the
    alternating-sign sum over the subtree below it, a contiguous range of its row: with
    ``R`` the reverse cumulative sum along each row, raveled and concatenated over blocks,
    ``value = child_sign * (R[child_pos] - R[child_end])``. Rows never mix trees, so the
    rounding of one tree never reaches another.

    Attributes:
        blocks: tuple of ``(index, sign)`` pairs of ``(n_rows, width)`` arrays.
        child_pos: ``(n_edges,)`` flat position of the child end of each tree edge.
        child_end: ``(n_edges,)`` flat position just past that child's subtree.
        child_sign: ``(n_edges,)`` sign of the child node.
    """

    blocks: tuple
    child_pos: np.ndarray
    child_end: np.ndarray
    child_sign: np.ndarray

    @property
    def n_edges(self) -> int:
        return int(self.child_pos.size)

    @property
    def n_slots(self) -> int:
        return int(sum(i.size for i, _ in self.blocks))

    def arrays(self) -> list[np.ndarray]:
        out = []
        for i, s in self.blocks:
            out += [i, s]
        return out + [self.child_pos, self.child_end, self.child_sign]


def _ro(a, dtype=np.int64) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(a, dtype=dtype))
    a.setflags(write=False)
    return a


class ColoringResult:
    """A coloring of a sparsity pattern with everything needed to decompress.

    Build one with [`color_jacobian`][] or [`color_hessian`][]; it is immutable and can be
    saved and loaded (`save` / `load`) together with its pattern.

    Products: ``n_forward`` JVPs (or HVPs for ``"star"``/``"acyclic"``) with seeds
    ``column_colors == k``, and ``n_reverse`` VJPs with seeds ``row_colors == k``. The
    compressed vector is the concatenation of the forward results ``(n_forward, m)`` and the
    reverse results ``(n_reverse, n)``, each raveled. ``gather`` maps it (extended by the
    substitution values for ``"acyclic"``) to the values on ``pattern``, in pattern order.

    Attributes:
        pattern: the colored [`SparsityPattern`][] (full symmetric for Hessian modes).
        mode: ``"forward"``, ``"reverse"``, ``"bidirectional"``, ``"star"`` or ``"acyclic"``.
        order: the vertex order that produced the colors (``"cyclic"`` for the periodic
            coloring ``j mod k`` tried first on Jacobians).
        column_colors: ``(n,)`` seed color of each column, ``-1`` when in no forward seed.
        row_colors: ``(m,)`` seed color of each row, ``-1`` when in no reverse seed.
        n_forward: number of JVPs / HVPs.
        n_reverse: number of VJPs.
        gather: ``(nnz,)`` decompression index.
        substitution: [`Substitution`][] data for ``"acyclic"``, else ``None``.

    Example:
        >>> import numpy as np
        >>> import sparseopt_adapters as sa
        >>> p = sa.SparsityPattern.from_dense(np.eye(6) + np.eye(6, k=1) + np.eye(6, k=-1))
        >>> c = sa.color_jacobian(p, mode="forward")
        >>> c
        ColoringResult(6×6, nnz=16, forward, 3 colors, order=cyclic)
        >>> c.column_colors
        array([0, 1, 2, 0, 1, 2])
    """

    __slots__ = (
        "pattern",
        "mode",
        "order",
        "column_colors",
        "row_colors",
        "n_forward",
        "n_reverse",
        "gather",
        "substitution",
        "_raw_colors",
        "_labels",
        "_frozen",
    )

    def __init__(self, pattern, mode, order, column_colors, row_colors, n_forward, n_reverse,
                 gather, substitution, raw_colors, labels):
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "order", order)
        object.__setattr__(self, "column_colors", _ro(column_colors))
        object.__setattr__(self, "row_colors", _ro(row_colors))
        object.__setattr__(self, "n_forward", int(n_forward))
        object.__setattr__(self, "n_reverse", int(n_reverse))
        object.__setattr__(self, "gather", _ro(gather))
        object.__setattr__(self, "substitution", substitution)
        object.__setattr__(self, "_raw_colors", _ro(raw_colors))
        object.__setattr__(self, "_labels", _ro(labels))
        object.__setattr__(self, "_frozen", True)

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"ColoringResult is immutable (tried to set {name}).")

    # -- properties -------------------------------------------------------------------
    @property
    def n_colors(self) -> int:
        """Number of products per evaluation (JVPs + VJPs, or HVPs)."""
        return self.n_forward + self.n_reverse

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.shape

    @property
    def colors(self) -> np.ndarray:
        """One color per vertex: columns (forward, star, acyclic), rows (reverse), or columns
        then rows with row colors offset by ``n_forward`` (bidirectional); ``-1`` = unused."""
        if self.mode == "reverse":
            return self.row_colors
        if self.mode == "bidirectional":
            r = np.where(self.row_colors >= 0, self.row_colors + self.n_forward, -1)
            return np.concatenate([self.column_colors, r])
        return self.column_colors

    @property
    def compressed_size(self) -> int:
        m, n = self.pattern.shape
        return self.n_forward * m + self.n_reverse * n

    @property
    def is_symmetric(self) -> bool:
        return self.mode in HESSIAN_METHODS

    def entry_colors(self) -> np.ndarray:
        """The color (product index) each nonzero is read from, in pattern order."""
        return self._labels

    def seeds(self) -> tuple[np.ndarray, np.ndarray]:
        """Dense 0/1 seed matrices ``(n_forward, n)`` and ``(n_reverse, m)`` (for tests)."""
        m, n = self.pattern.shape
        f = np.zeros((self.n_forward, n))
        j = np.flatnonzero(self.column_colors >= 0)
        f[self.column_colors[j], j] = 1.0
        r = np.zeros((self.n_reverse, m))
        i = np.flatnonzero(self.row_colors >= 0)
        r[self.row_colors[i], i] = 1.0
        return f, r

    # -- persistence ------------------------------------------------------------------
    def save(self, file) -> None:
        """Save pattern and colors to ``.npz`` (numpy adds ``.npz`` to a name without it, and
        [`ColoringResult.load`][] does too); `load` rebuilds the rest.

        Example:
            >>> import os, tempfile
            >>> import sparseopt_adapters as sa
            >>> c = sa.color_hessian(sa.SparsityPattern.identity(4))
            >>> path = os.path.join(tempfile.mkdtemp(), "coloring")
            >>> c.save(path)
            >>> sa.ColoringResult.load(path) == c
            True
        """
        m, n = self.pattern.shape
        np.savez_compressed(
            file,
            rows=self.pattern.rows,
            cols=self.pattern.cols,
            shape=np.array([m, n]),
            mode=np.array(self.mode),
            order=np.array(self.order),
            colors=self._raw_colors,
            format=np.array(_FORMAT),
        )

    @classmethod
    def load(cls, file) -> ColoringResult:
        """Load a coloring saved by [`ColoringResult.save`][] (``.npz`` added if missing; its
        validity is re-checked). A missing, corrupt or foreign file raises an error that
        says so."""
        z = load_npz(file, _SAVED, "ColoringResult")
        pattern = SparsityPattern(z["rows"], z["cols"],
                                  tuple(int(s) for s in np.asarray(z["shape"]).ravel()))
        mode = str(z["mode"])
        order = str(z["order"])
        if mode not in _ALL_MODES:
            raise ValueError(
                f"ColoringResult.load: {file!r} holds an unknown coloring mode {mode!r} (one of "
                f"{_ALL_MODES} expected). Load a file saved with ColoringResult.save."
            )
        from . import _kernels
        from ._decompression import BUILDERS

        with _kernels.pattern_size(pattern):
            return BUILDERS[mode](pattern, np.asarray(z["colors"]), order)

    # -- identity / pictures ----------------------------------------------------------
    def __eq__(self, other):
        if not isinstance(other, ColoringResult):
            return NotImplemented
        return (
            self.mode == other.mode
            and self.pattern == other.pattern
            and np.array_equal(self._raw_colors, other._raw_colors)
        )

    def __hash__(self):
        return hash((self.mode, self.pattern, self._raw_colors.tobytes()))

    def __repr__(self) -> str:
        m, n = self.pattern.shape
        if self.mode == "bidirectional":
            k = f"{self.n_forward} JVPs + {self.n_reverse} VJPs"
        else:
            k = f"{self.n_colors} colors"
        return (f"ColoringResult({m}×{n}, nnz={self.pattern.nnz}, {self.mode}, {k}, "
                f"order={self.order})")

    def __str__(self) -> str:
        return repr(self) + "\n" + text_spy(self.pattern, labels=self._labels)

    def spy(self, ax=None, **kwargs):
        """Matplotlib picture of the pattern, each entry colored by the product it comes from."""
        return matplotlib_spy(self.pattern, ax=ax, colors=self._labels, **kwargs)
