"""Which libipopt the ``backend="libipopt"`` path loads: discovery, validation, build facts.

One place decides which IPOPT shared library is used (`resolve`): an explicit ``libipopt=``
path, else the ``SPARSEOPT_LIBIPOPT`` environment variable, else the first usable library among
the one bundled with ``casadi`` (IPOPT 3.14.19, MUMPS 5.8.2 + METIS), the one bundled with
``cyipopt-wheels`` (IPOPT 3.14.11, MUMPS 5.5.1, no METIS) and a system one
(``ctypes.util.find_library("ipopt")``). `load` opens it with ``RTLD_LOCAL`` (its symbols do not
leak into, or clash with, another IPOPT/MUMPS already in the process), checks that every C
function the backend calls is there, and reads the version and default linear solver from a
one-variable probe solve. Nothing is loaded at import time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import glob
import importlib.util
import os
import pathlib
import re
import tempfile
import threading

ENV_VAR = "SPARSEOPT_LIBIPOPT"

# IpStdCInterface.h, IPOPT >= 3.14 (GetIpoptCurrentIterate/Violations appeared in 3.14.0).
REQUIRED_SYMBOLS = (
    "CreateIpoptProblem",
    "FreeIpoptProblem",
    "AddIpoptStrOption",
    "AddIpoptIntOption",
    "AddIpoptNumOption",
    "OpenIpoptOutputFile",
    "SetIntermediateCallback",
    "IpoptSolve",
    "GetIpoptCurrentIterate",
    "GetIpoptCurrentViolations",
)

# option that sets the fill-reducing ordering of each linear solver, with IPOPT's default
_ORDERING_OPTION = {
    "mumps": ("mumps_pivot_order", "7 (automatic: MUMPS chooses)"),
    "ma57": ("ma57_pivot_order", "5 (automatic: METIS or AMD)"),
    "ma86": ("ma86_order", "auto (amd without METIS in HSL)"),
    "ma97": ("ma97_order", "auto"),
    "ma77": ("ma77_order", "metis (amd without METIS in HSL)"),
    "ma27": (None, "none (MA27 has no ordering option)"),
    "pardiso": ("pardiso_order", "the solver's default"),
    "pardisomkl": ("pardisomkl_order", "metis"),
}

_BANNER = re.compile(r"This is Ipopt version ([^\s,]+), running with linear solver ([^\n]+?)\.\s*$",
                     re.M)


class LibIpoptError(RuntimeError):
    """A libipopt that cannot be used: missing, not loadable, or lacking a C function."""


@dataclasses.dataclass(frozen=True, eq=False)
class IpoptLibrary:
    """An IPOPT shared library loaded with ``RTLD_LOCAL`` and checked.

    Attributes:
        path: the file (as resolved, symlinks followed).
        source: where the path came from (``"libipopt= argument"``, ``"$SPARSEOPT_LIBIPOPT"``,
            ``"casadi"``, ``"cyipopt-wheels"``, ``"system"``).
        version: IPOPT's version string, e.g. ``"3.14.19"``.
        linear_solver: the default linear solver IPOPT reports, e.g. ``"MUMPS 5.8.2"``.
        metis: whether METIS is linked (MUMPS and MA57 then use it for their orderings).
        cdll: the `ctypes.CDLL`.
    """

    path: str
    source: str
    version: str
    linear_solver: str
    metis: bool
    cdll: ctypes.CDLL = dataclasses.field(repr=False)

    def describe(self, options: dict | None = None) -> dict:
        """Build facts for a result: path, version, linear solver and ordering in effect."""
        options = options or {}
        chosen = options.get("linear_solver")
        chosen = chosen.decode() if isinstance(chosen, bytes) else chosen
        solver = self.linear_solver if chosen is None else str(chosen)
        key = (chosen or self.linear_solver.split()[0]).lower()
        opt, default = _ORDERING_OPTION.get(key, (None, "the solver's default"))
        ordering = default if opt is None or opt not in options else f"{options[opt]}"
        if opt is not None:
            ordering = f"{opt}={ordering}"
        if key in ("mumps", "ma57"):
            ordering += ", METIS linked" if self.metis else ", no METIS"
        return {"path": self.path, "source": self.source, "version": self.version,
                "linear_solver": solver, "ordering": ordering}


# ---------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------
def _package_dir(name: str) -> pathlib.Path | None:
    try:
        spec = importlib.util.find_spec(name)  # does not import the package
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(next(iter(spec.submodule_search_locations)))


def _first(pattern: str) -> str | None:
    hits = sorted(glob.glob(pattern))
    return hits[0] if hits else None


def candidates() -> list[tuple[str, str]]:
    """Installed IPOPT libraries, best first, as ``(source, path)`` pairs."""
    out = []
    casadi = _package_dir("casadi")
    if casadi is not None:
        for name in ("libipopt.so.3", "libipopt.3.dylib", "libipopt-3.dll", "ipopt-3.dll"):
            if (casadi / name).exists():
                out.append(("casadi", str(casadi / name)))
                break
    cy = _package_dir("cyipopt")
    if cy is not None:
        for libs in ("cyipopt_wheels.libs", "cyipopt.libs", ".dylibs"):
            hit = _first(str(cy.parent / libs / "libipopt*")) or _first(str(cy / libs /
                                                                                 "libipopt*"))
            if hit:
                out.append(("cyipopt-wheels", hit))
                break
    system = ctypes.util.find_library("ipopt")
    if system:
        out.append(("system", system))
    return out


def resolve(libipopt: str | os.PathLike | None = None) -> IpoptLibrary:
    """The library ``backend="libipopt"`` uses (the one place that decides).

    Args:
        libipopt: a path to a libipopt shared library; ``None``: ``$SPARSEOPT_LIBIPOPT``, else
            the first usable one of `candidates` (casadi's, cyipopt-wheels', the system's).

    Raises:
        LibIpoptError: naming the file and what is wrong with it, or, from discovery, every
            file tried and why it was refused.

    Example:
        >>> from sparseopt_adapters.ipopt import _libraries
        >>> lib = _libraries.resolve()
        >>> lib.version.startswith("3.")
        True
    """
    if libipopt is not None:
        return load(os.fspath(libipopt), "libipopt= argument")
    env = os.environ.get(ENV_VAR)
    if env:
        return load(env, f"${ENV_VAR}")
    refused = []
    for source, path in candidates():
        try:
            return load(path, source)
        except LibIpoptError as e:
            refused.append(f"  {source}: {e}")
    raise LibIpoptError(
        "backend='libipopt' found no usable IPOPT library"
        + (":\n" + "\n".join(refused) if refused else " (none of casadi, cyipopt-wheels or a "
           "system libipopt is installed)")
        + f"\nPass libipopt='/path/to/libipopt.so' or set {ENV_VAR}, `pip install casadi` "
        "(bundles IPOPT 3.14 + MUMPS + METIS), or use backend='cyipopt'."
    )


# ---------------------------------------------------------------------------------------
# loading and validation
# ---------------------------------------------------------------------------------------
_LOADED: dict[str, IpoptLibrary] = {}
_LOCK = threading.Lock()


def load(path: str, source: str = "libipopt= argument") -> IpoptLibrary:
    """Open ``path`` with ``RTLD_LOCAL``, check its C interface, probe version and solver.

    Cached by resolved path: a library is opened and probed once per process.
    """
    where = f"{path!r} (from {source})"
    p = pathlib.Path(path)
    if p.is_absolute() or os.sep in path:
        if not p.exists():
            raise LibIpoptError(f"{where} does not exist.")
        if p.is_dir():
            raise LibIpoptError(f"{where} is a directory; pass the libipopt file inside it.")
        key = str(p.resolve())
    else:  # a bare name ("libipopt.so.3") found by the dynamic linker
        key = path
    with _LOCK:
        if key in _LOADED:  # opened and probed once; the source is this request's
            return dataclasses.replace(_LOADED[key], source=source)
        if "cyipopt" in key:  # the wheel's libipopt needs the MUMPS/OpenBLAS cyipopt loads
            try:
                import cyipopt  # noqa: F401
            except ImportError:
                pass
        try:
            cdll = ctypes.CDLL(key, mode=ctypes.RTLD_LOCAL)
        except OSError as e:
            raise LibIpoptError(
                f"{where} could not be loaded: {e}. A missing dependency (another .so it "
                "needs), a different CPU architecture or a file that is not a shared library "
                "all end here."
            ) from None
        missing = [s for s in REQUIRED_SYMBOLS if not hasattr(cdll, s)]
        if missing:
            old = "GetIpoptCurrentIterate" in missing and len(missing) <= 2
            raise LibIpoptError(
                f"{where} lacks the IPOPT C-interface function(s) {', '.join(missing)}"
                + (": it is older than IPOPT 3.14, which backend='libipopt' needs."
                   if old else ": it is not an IPOPT library (IpStdCInterface.h).")
            )
        version, solver = _probe(cdll, where)
        if not _at_least_3_14(version):
            raise LibIpoptError(f"{where} is IPOPT {version}; backend='libipopt' needs >= 3.14.")
        lib = IpoptLibrary(path=key, source=source, version=version, linear_solver=solver,
                           metis=hasattr(cdll, "METIS_NodeND"), cdll=cdll)
        _LOADED[key] = lib
        return lib


def _at_least_3_14(version: str) -> bool:
    m = re.match(r"(\d+)\.(\d+)", version)
    return m is None or (int(m[1]), int(m[2])) >= (3, 14)


def _library_version(cdll) -> str | None:
    fn = getattr(cdll, "GetIpoptVersion", None)  # IPOPT >= 3.14.18
    if fn is None:
        return None
    a, b, c = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    fn.restype = None
    fn.argtypes = [ctypes.POINTER(ctypes.c_int)] * 3
    fn(ctypes.byref(a), ctypes.byref(b), ctypes.byref(c))
    return f"{a.value}.{b.value}.{c.value}"


def _probe(cdll, where: str) -> tuple[str, str]:
    """Solve min (x - 1)² once with an output file: IPOPT's banner names version and solver."""
    from . import _capi

    with tempfile.TemporaryDirectory(prefix="sparseopt_libipopt_") as tmp:
        log = os.path.join(tmp, "probe.out")
        try:
            status = _capi.probe_solve(cdll, log)
        except Exception as e:  # noqa: BLE001 - reported with the file name
            raise LibIpoptError(f"{where}: a one-variable probe solve failed: {e}") from e
        text = pathlib.Path(log).read_text(errors="replace") if os.path.exists(log) else ""
    m = _BANNER.search(text)
    version = _library_version(cdll) or (m[1] if m else None)
    if version is None:
        stem = re.search(r"\.so\.(\d+\.\d+\.\d+)$|-(\d+\.\d+\.\d+)\.dylib$",
                         os.path.realpath(cdll._name))
        version = (stem[1] or stem[2]) if stem else "unknown"
    if m is None or status not in (0, 1):
        raise LibIpoptError(
            f"{where}: a one-variable probe solve returned status {status} and printed no "
            f"'This is Ipopt version' banner; its linear solver may be missing. Log:\n"
            + text[-2000:]
        )
    return version, m[2].strip()
