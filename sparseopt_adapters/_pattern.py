"""Immutable, hashable sparsity patterns: the currency every other module trades in."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import scipy.sparse as sp


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


_FORMAT = "sparseopt_adapters.SparsityPattern/1"


def npz_path(file):
    """``file``, or ``file + ".npz"`` when only that exists (numpy's `savez` appends it)."""
    if isinstance(file, str | os.PathLike):
        path = os.fspath(file)
        if not os.path.exists(path) and not path.endswith(".npz") and os.path.exists(
            path + ".npz"
        ):
            return path + ".npz"
        return path
    return file  # an open file object


def load_npz(file, keys, what: str) -> dict:
    """The arrays ``keys`` of an ``.npz`` written by ``what.save``, with clear errors for a
    missing, corrupt or foreign file (never numpy's "pickled (object) data")."""
    path = npz_path(file)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive")
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise ValueError(f"it has the arrays {sorted(z.files)}, not {list(keys)}")
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{what}.load: no file {path!r} (nor {os.fspath(path) + '.npz'!r}). Save one with "
            f"{what}.save(path)."
        ) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        msg = str(e)
        if "pickled" in msg or isinstance(e, zipfile.BadZipFile | EOFError):
            why = "it is not an .npz archive: corrupt, truncated or another format"
        elif "Object arrays" in msg:
            why = "it holds Python objects, which are never loaded"
        else:
            why = msg
        raise ValueError(
            f"{what}.load: {file!r} is not a file written by {what}.save ({why}). Load a "
            f"file saved with {what}.save, or rebuild it."
        ) from None


class SparsityPattern:
    """The nonzero structure of an ``m × n`` matrix, row-major sorted and duplicate-free.

    Patterns are immutable and hashable, so they can be static data of a jitted function.
    ``rows`` and ``cols`` are read-only ``int64`` numpy arrays; entry ``k`` of a values
    vector "on this pattern" belongs to ``(rows[k], cols[k])``.

    Example:
        >>> import numpy as np
        >>> from sparseopt_adapters import SparsityPattern
        >>> p = SparsityPattern.from_dense(np.eye(3) + np.eye(3, k=1))
        >>> p
        SparsityPattern(3×3, nnz=5, density=55.6%)
        >>> p.rows, p.cols
        (array([0, 0, 1, 1, 2]), array([0, 1, 1, 2, 2]))
    """

    __slots__ = ("_rows", "_cols", "_shape", "_hash")

    def __init__(self, rows, cols, shape):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 0:
            raise ValueError(f"SparsityPattern needs a 2-D shape (m, n), got {shape!r}.")
        rows = np.asarray(rows).reshape(-1)
        cols = np.asarray(cols).reshape(-1)
        if rows.shape != cols.shape:
            raise ValueError(
                f"rows and cols must have the same length, got {rows.size} and {cols.size}."
            )
        if rows.size and not (
            np.issubdtype(rows.dtype, np.integer) and np.issubdtype(cols.dtype, np.integer)
        ):
            raise TypeError(
                f"rows and cols must be integer arrays, got {rows.dtype} and {cols.dtype}."
            )
        rows = rows.astype(np.int64)
        cols = cols.astype(np.int64)
        m, n = shape
        if rows.size and (rows.min() < 0 or rows.max() >= m or cols.min() < 0 or cols.max() >= n):
            raise ValueError(
                f"pattern indices out of range for shape {shape}: rows in "
                f"[{rows.min()}, {rows.max()}], cols in [{cols.min()}, {cols.max()}]."
            )
        key = rows * max(n, 1) + cols
        if rows.size > 1 and not np.all(key[1:] > key[:-1]):
            key = np.sort(key)  # sort-based dedup: faster than hash-based np.unique
            key = key[np.concatenate([[True], key[1:] != key[:-1]])]
            rows, cols = np.divmod(key, max(n, 1))
        self._rows = _readonly(rows)
        self._cols = _readonly(cols)
        self._shape = shape
        self._hash = None

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def from_dense(cls, mask) -> SparsityPattern:
        """Pattern of the nonzeros (or ``True`` entries) of a dense 2-D array."""
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"from_dense needs a 2-D array, got shape {mask.shape}.")
        r, c = np.nonzero(mask)
        return cls(r, c, mask.shape)

    @classmethod
    def from_scipy(cls, a) -> SparsityPattern:
        """Pattern of the stored entries of a scipy sparse matrix/array (explicit zeros kept)."""
        coo = sp.coo_array(a)
        coo.sum_duplicates()
        return cls(coo.row, coo.col, coo.shape)

    @classmethod
    def from_csr(cls, a) -> SparsityPattern:
        """Pattern of a canonical CSR matrix (sorted indices, no duplicates), without a sort."""
        a = sp.csr_array(a)
        a.sum_duplicates()
        a.sort_indices()
        rows = np.repeat(np.arange(a.shape[0], dtype=np.int64), np.diff(a.indptr))
        return cls(rows, a.indices, a.shape)

    @classmethod
    def identity(cls, n: int) -> SparsityPattern:
        i = np.arange(n)
        return cls(i, i, (n, n))

    # -- basic properties ---------------------------------------------------------------
    @property
    def rows(self) -> np.ndarray:
        return self._rows

    @property
    def cols(self) -> np.ndarray:
        return self._cols

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    @property
    def nnz(self) -> int:
        return int(self._rows.size)

    @property
    def density(self) -> float:
        m, n = self._shape
        return self.nnz / (m * n) if m * n else 0.0

    @property
    def T(self) -> SparsityPattern:
        return SparsityPattern(self._cols, self._rows, self._shape[::-1])

    def to_scipy(self, values=None, format: str = "csr"):
        """A scipy sparse array on this pattern (``values`` in pattern order, default ones)."""
        data = np.ones(self.nnz) if values is None else np.asarray(values)
        return sp.coo_array((data, (self._rows, self._cols)), shape=self._shape).asformat(format)

    def todense(self) -> np.ndarray:
        """Boolean dense mask."""
        out = np.zeros(self._shape, dtype=bool)
        out[self._rows, self._cols] = True
        return out

    def row_counts(self) -> np.ndarray:
        return np.bincount(self._rows, minlength=self._shape[0])

    def col_counts(self) -> np.ndarray:
        return np.bincount(self._cols, minlength=self._shape[1])

    def is_symmetric(self) -> bool:
        return self._shape[0] == self._shape[1] and self == self.T

    def lower(self) -> SparsityPattern:
        """The lower triangle (row >= col), as IPOPT wants Hessian structures."""
        keep = self._rows >= self._cols
        return SparsityPattern(self._rows[keep], self._cols[keep], self._shape)

    def symmetrize(self) -> SparsityPattern:
        """The union of the pattern and its transpose."""
        if self._shape[0] != self._shape[1]:
            raise ValueError(f"symmetrize needs a square pattern, got {self._shape}.")
        a = self.to_scipy(np.ones(self.nnz, bool))
        return SparsityPattern.from_csr(a + a.T)

    def union(self, other: SparsityPattern) -> SparsityPattern:
        if other.shape != self._shape:
            raise ValueError(f"union of patterns of shapes {self._shape} and {other.shape}.")
        a = self.to_scipy(np.ones(self.nnz, bool))
        return SparsityPattern.from_csr(a + other.to_scipy(np.ones(other.nnz, bool)))

    def issubset(self, other: SparsityPattern) -> bool:
        """True when every entry of ``self`` is an entry of ``other``."""
        if other.shape != self._shape:
            return False
        n = max(self._shape[1], 1)
        return bool(np.all(np.isin(self._rows * n + self._cols, other.rows * n + other.cols)))

    def positions(self, rows, cols) -> np.ndarray:
        """Index into the values vector of each ``(rows[k], cols[k])``; -1 where absent."""
        n = max(self._shape[1], 1)
        key = self._rows * n + self._cols
        q = np.asarray(rows, dtype=np.int64) * n + np.asarray(cols, dtype=np.int64)
        pos = np.searchsorted(key, q)
        pos_c = np.minimum(pos, max(key.size - 1, 0))
        found = (pos < key.size) & (key[pos_c] == q) if key.size else np.zeros(q.shape, bool)
        return np.where(found, pos, -1)

    # -- persistence --------------------------------------------------------------------
    def save(self, file) -> None:
        """Save to ``.npz`` (numpy adds ``.npz`` to a name without it, and `load` does too).

        Example:
            >>> import os, tempfile
            >>> from sparseopt_adapters import SparsityPattern
            >>> p = SparsityPattern.identity(3)
            >>> path = os.path.join(tempfile.mkdtemp(), "p")
            >>> p.save(path)
            >>> SparsityPattern.load(path) == p
            True
        """
        np.savez_compressed(
            file, rows=self._rows, cols=self._cols, shape=np.array(self._shape),
            format=np.array(_FORMAT),
        )

    @classmethod
    def load(cls, file) -> SparsityPattern:
        """Load a pattern written by :meth:`SparsityPattern.save` (``.npz`` added if missing,
        as numpy's `save` adds it)."""
        z = load_npz(file, ("rows", "cols", "shape"), "SparsityPattern")
        return cls(z["rows"], z["cols"], tuple(int(s) for s in np.asarray(z["shape"]).ravel()))

    # -- identity -----------------------------------------------------------------------
    def __eq__(self, other) -> bool:
        if not isinstance(other, SparsityPattern):
            return NotImplemented
        return (
            self._shape == other._shape
            and np.array_equal(self._rows, other._rows)
            and np.array_equal(self._cols, other._cols)
        )

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash((self._shape, self._rows.tobytes(), self._cols.tobytes()))
        return self._hash

    def __reduce__(self):
        return (SparsityPattern, (self._rows, self._cols, self._shape))

    # -- pictures -----------------------------------------------------------------------
    def __repr__(self) -> str:
        m, n = self._shape
        return f"SparsityPattern({m}×{n}, nnz={self.nnz}, density={100 * self.density:.1f}%)"

    def __str__(self) -> str:
        return repr(self) + "\n" + text_spy(self)

    def spy(self, ax=None, colors=None, **kwargs):
        """Matplotlib picture of the pattern (optionally colored by ``colors`` per column)."""
        return matplotlib_spy(self, ax=ax, colors=colors, **kwargs)


def text_spy(pattern: SparsityPattern, max_size: int = 40, labels=None) -> str:
    """A text picture: ``●`` for an entry (or a color label), ``·`` for a zero.

    Patterns larger than ``max_size`` are downsampled: a cell shows ``●`` when any entry of
    its block is present.
    """
    m, n = pattern.shape
    if m == 0 or n == 0:
        return "(empty)"
    sr = max(1, -(-m // max_size))
    sc = max(1, -(-n // max_size))
    gm, gn = -(-m // sr), -(-n // sc)
    grid = np.full((gm, gn), "·", dtype=object)
    if labels is None:
        grid[pattern.rows // sr, pattern.cols // sc] = "●"
    else:
        symbols = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
        lab = np.asarray(labels)
        for r, c, k in zip(pattern.rows // sr, pattern.cols // sc, lab, strict=True):
            grid[r, c] = symbols[int(k) % len(symbols)]
    scale = "" if sr == sc == 1 else f"  (each cell {sr}×{sc})"
    return "\n".join(" ".join(row) for row in grid) + scale


def matplotlib_spy(pattern: SparsityPattern, ax=None, colors=None, markersize=None, **kwargs):
    try:
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "spy() needs matplotlib: pip install 'sparseopt_adapters[plot]'."
        ) from e
    if ax is None:
        _, ax = plt.subplots()
    m, n = pattern.shape
    ms = markersize or max(0.5, min(8.0, 300.0 / max(m, n, 1)))
    c = None if colors is None else np.asarray(colors)
    if c is not None:
        kwargs.setdefault("cmap", "tab20")  # a colormap only means something with colors
    ax.scatter(pattern.cols, pattern.rows, c=c, s=ms**2, marker="s", **kwargs)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(m - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_title(repr(pattern), fontsize=8)
    return ax
