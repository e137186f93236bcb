"""The setup cache: detection, colouring and compiled code reused when a call repeats.

Keyed the way `jax.jit` keys its cache: the *function objects* (held by weak reference, so
an entry dies with its function), plus a hashable key built from the shapes and dtypes of
the array arguments and the values of everything static. A new lambda per call is a new
function and misses, exactly as with `jax.jit`.

Integer and boolean arrays are keyed by their *values*: detection reads them (index arrays
decide the pattern), so other index data must never reuse a pattern built for the old one.

Opt out with ``SPARSEOPT_CACHE_SIZE=0`` in the environment (read at import) or
``sa.set_cache_size(0)``; empty it with ``sa.clear_cache()``; inspect it with
``sa.cache_info()``.

Example:
    >>> import sparseopt_adapters as sa
    >>> from sparseopt_adapters._cache import cached
    >>> f = lambda x: x
    >>> cached("demo", (f,), ("k",), lambda: [1, 2])
    [1, 2]
    >>> sa.cache_info()["size"] >= 1
    True
    >>> sa.clear_cache(); sa.cache_info()["size"]
    0
"""

from __future__ import annotations

import hashlib
import os
import threading
import types
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import jax
import numpy as np

T = TypeVar("T")

_DEFAULT_SIZE = 64


def _env_size() -> int:
    raw = os.environ.get("SPARSEOPT_CACHE_SIZE", "").strip()
    if not raw:
        return _DEFAULT_SIZE
    try:
        size = int(raw)
    except ValueError:
        raise ValueError(
            f"SPARSEOPT_CACHE_SIZE={raw!r} is not an integer; set it to 0 to turn the setup "
            f"cache off, or to the number of entries to keep (default {_DEFAULT_SIZE})."
        ) from None
    if size < 0:
        raise ValueError(f"SPARSEOPT_CACHE_SIZE={raw!r} must be >= 0 (0 turns the cache off).")
    return size


class _Ref:
    """A weak reference to a callable when possible, else a strong one (hashed by identity).

    Bound methods are recreated on every attribute access, so they are referenced through
    their ``__self__`` and ``__func__`` (both weakly).
    """

    __slots__ = ("_refs", "_ids")

    def __init__(self, obj, on_death):
        parts = (obj.__self__, obj.__func__) if isinstance(obj, types.MethodType) else (obj,)
        refs = []
        for p in parts:
            try:
                refs.append(weakref.ref(p, on_death))
            except TypeError:  # not weak-referenceable: keep it alive (bounded by the LRU)
                refs.append(lambda p=p: p)
        self._refs = tuple(refs)
        self._ids = tuple(id(p) for p in parts)

    def alive(self) -> bool:
        return all(r() is not None for r in self._refs)

    def __hash__(self):
        return hash(self._ids)

    def __eq__(self, other):
        if self is other:
            return True
        if not isinstance(other, _Ref) or self._ids != other._ids:
            return False
        # the same live objects (an id can be reused once its object has died)
        return all(a() is not None and a() is b() for a, b in zip(self._refs, other._refs,
                                                                   strict=True))


class _SetupCache:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        # a plain dict in LRU order (oldest first): an OrderedDict's iterator looks keys up
        # again, which raised KeyError once a key's weak references had died
        self._entries: dict[Hashable, Any] = {}
        self._lock = threading.RLock()
        self._building = threading.local()  # .depth: nesting of builds in this thread
        self._evicting = False
        self._evict_again = False

    def _evict_dead(self, _ref=None):
        # a weakref callback: the garbage collector can run it while this thread is inside
        # another method (the lock is re-entrant), even inside this one while it iterates;
        # a nested call only asks the running one to look again
        with self._lock:
            if self._evicting:
                self._evict_again = True
                return
            self._evicting = True
            try:
                self._evict_again = True
                while self._evict_again:
                    self._evict_again = False
                    keys = tuple(self._entries)
                    for k in keys:
                        if not all(r.alive() for r in k[1]):
                            self._entries.pop(k, None)
            finally:
                self._evicting = False

    def get(self, kind: str, fns: Sequence[Callable], key: Hashable, build: Callable[[], T]) -> T:
        if getattr(self._building, "depth", 0):
            # inside another entry's build: that entry holds what is built here, so caching
            # it again would only duplicate it (and count a second miss for one setup)
            return build()
        if self.maxsize == 0:
            self.misses += 1
            return self._build(build)
        refs = tuple(_Ref(f, self._evict_dead) for f in fns)
        full = (kind, refs, key)
        try:
            hash(full)
        except TypeError as e:
            raise TypeError(
                f"setup cache ({kind}): the cache key is not hashable ({e}); static arguments "
                "must be hashable, as for jax.jit's static_argnums."
            ) from None
        with self._lock:
            if full in self._entries:
                value = self._entries.pop(full)
                self._entries[full] = value  # most recently used last
                self.hits += 1
                return value
        value = self._build(build)  # outside the lock: building may take seconds
        with self._lock:
            self.misses += 1
            self._entries.pop(full, None)
            self._entries[full] = value
            self._drop_oldest()
        return value

    def _drop_oldest(self):
        while len(self._entries) > self.maxsize:
            del self._entries[next(iter(self._entries))]

    def _build(self, build):
        self._building.depth = getattr(self._building, "depth", 0) + 1
        try:
            return build()
        finally:
            self._building.depth -= 1

    def clear(self):
        with self._lock:
            self._entries.clear()
            self.hits = 0
            self.misses = 0


_CACHE = _SetupCache(_env_size())


def cached(kind: str, fns: Sequence[Callable], key: Hashable, build: Callable[[], T]) -> T:
    """``build()``, or the value an earlier call with the same functions and key built.

    Args:
        kind: what is cached (e.g. ``"sparse_jacobian"``); part of the key.
        fns: the user's function objects, compared by identity and held weakly.
        key: everything else the result depends on, hashable (see `structure_key`).
        build: makes the value on a miss.
    """
    return _CACHE.get(kind, tuple(fns), key, build)


def clear_cache() -> None:
    """Forget every cached detection, colouring and compiled evaluator.

    Example:
        >>> import sparseopt_adapters as sa
        >>> sa.clear_cache()
    """
    _CACHE.clear()


def cache_info() -> dict[str, int]:
    """Hits, misses, current size and maximum size of the setup cache.

    Example:
        >>> import sparseopt_adapters as sa
        >>> sorted(sa.cache_info())
        ['hits', 'maxsize', 'misses', 'size']
    """
    with _CACHE._lock:
        return {
            "hits": _CACHE.hits,
            "misses": _CACHE.misses,
            "size": len(_CACHE._entries),
            "maxsize": _CACHE.maxsize,
        }


def set_cache_size(maxsize: int) -> None:
    """Keep at most ``maxsize`` setups; ``0`` turns the cache off (every call sets up anew).

    Example:
        >>> import sparseopt_adapters as sa
        >>> sa.set_cache_size(64)
    """
    if isinstance(maxsize, bool) or not isinstance(maxsize, int | np.integer) or maxsize < 0:
        raise ValueError(f"set_cache_size: maxsize must be an integer >= 0, got {maxsize!r}.")
    with _CACHE._lock:
        _CACHE.maxsize = int(maxsize)
        _CACHE._drop_oldest()


def _leaf_key(leaf) -> Hashable:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return ("struct", tuple(leaf.shape), str(leaf.dtype))
    if isinstance(leaf, jax.core.Tracer):
        return ("traced", tuple(leaf.shape), str(leaf.dtype))
    if isinstance(leaf, np.ndarray | jax.Array | np.generic):
        dtype = np.dtype(leaf.dtype)
        shape = tuple(np.shape(leaf))
        if np.issubdtype(dtype, np.inexact):
            return ("array", shape, str(dtype))
        # integer / bool data: detection reads the values, so they are part of the key
        data = np.ascontiguousarray(np.asarray(leaf))
        digest = hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()
        return ("data", shape, str(dtype), digest)
    if isinstance(leaf, float):  # a Python float is a traced scalar argument for jax.jit
        return ("pyfloat",)
    if isinstance(leaf, bool | int | str | bytes | type(None) | complex):
        return ("static", type(leaf).__name__, leaf)
    try:
        hash(leaf)
    except TypeError:  # unhashable and not an array: never equal to anything (always a miss)
        return ("unhashable", object())
    return ("static", type(leaf).__name__, leaf)


def structure_key(tree) -> Hashable:
    """A hashable summary of ``tree``: its structure, the shape and dtype of float arrays,
    the values of integer/bool arrays and of static (non-array) leaves.

    Example:
        >>> import jax.numpy as jnp
        >>> from sparseopt_adapters._cache import structure_key
        >>> structure_key(jnp.ones(3)) == structure_key(jnp.zeros(3))
        True
        >>> structure_key(jnp.arange(3)) == structure_key(jnp.arange(3) + 1)
        False
    """
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (treedef, tuple(_leaf_key(leaf) for leaf in leaves))
