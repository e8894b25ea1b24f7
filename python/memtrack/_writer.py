"""The writer side: mark, scope, enabled, live, untracked, through the process's one libmemtrack.

A process must have one memtrack writer: two copies of the library would take
two process-table entries and split the process's events and counters. So
this module never brings its own writer while the runtime has one. It binds,
on first use, to the first of:

1. a ``libmemtrack.so`` this process already loaded (the runtime's: tt_metal
   links it), found in ``/proc/self/maps`` and opened with ``RTLD_NOLOAD``;
2. the library named by ``$MEMTRACK_LIB``;
3. the copy the package ships: its native extension, which exports the same
   C ABI (``memtrack_*``).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Dict, Optional, Tuple

_LIB_PREFIX = "libmemtrack.so"
_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[str] = None


class _Live(ctypes.Structure):
    """``memtrack_live`` of include/memtrack.h."""

    _fields_ = [
        ("live_bytes", ctypes.c_int64),
        ("live_buffers", ctypes.c_int64),
        ("device_id", ctypes.c_uint32),
        ("kind", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8 * 3),
    ]


def loaded_library_path() -> Optional[str]:
    """The path of a libmemtrack.so this process has mapped, if any."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6:
                    path = fields[5].strip()
                    if os.path.basename(path).startswith(_LIB_PREFIX):
                        return path
    except OSError:
        pass
    return None


def _shipped_library_path() -> str:
    from . import _native

    return _native.__file__


def _open(path: str, already_loaded: bool) -> ctypes.CDLL:
    mode = os.RTLD_LAZY | (os.RTLD_NOLOAD if already_loaded else 0)
    return ctypes.CDLL(path, mode=mode)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.memtrack_init.argtypes = [ctypes.c_char_p]
    lib.memtrack_init.restype = ctypes.c_int
    lib.memtrack_enabled.argtypes = []
    lib.memtrack_enabled.restype = ctypes.c_int
    lib.memtrack_mark.argtypes = [ctypes.c_char_p]
    lib.memtrack_mark.restype = None
    lib.memtrack_strerror.argtypes = [ctypes.c_int]
    lib.memtrack_strerror.restype = ctypes.c_char_p
    if hasattr(lib, "memtrack_live_usage"):
        lib.memtrack_live_usage.argtypes = [ctypes.POINTER(_Live), ctypes.c_uint32]
        lib.memtrack_live_usage.restype = ctypes.c_uint32
    if hasattr(lib, "memtrack_untracked_usage"):
        lib.memtrack_untracked_usage.argtypes = [
            ctypes.POINTER(ctypes.c_int64),
            ctypes.POINTER(ctypes.c_int64),
            ctypes.POINTER(ctypes.c_uint64),
        ]
        lib.memtrack_untracked_usage.restype = ctypes.c_int
    if hasattr(lib, "memtrack_scope_begin"):
        lib.memtrack_scope_begin.argtypes = [ctypes.c_char_p]
        lib.memtrack_scope_begin.restype = None
        lib.memtrack_scope_end.argtypes = []
        lib.memtrack_scope_end.restype = None
    return lib


def library() -> ctypes.CDLL:
    """The libmemtrack this process writes through (bound once, on first use)."""
    global _lib, _lib_path
    with _lock:
        if _lib is None:
            loaded = loaded_library_path()
            if loaded is not None:
                path, lib = loaded, _open(loaded, already_loaded=True)
            elif os.environ.get("MEMTRACK_LIB"):
                path = os.environ["MEMTRACK_LIB"]
                try:
                    lib = _open(path, already_loaded=False)
                except OSError as e:
                    raise OSError(f"memtrack: cannot load $MEMTRACK_LIB: {e}") from None
            else:
                path = _shipped_library_path()
                lib = _open(path, already_loaded=False)
            _lib, _lib_path = _declare(lib), path
        return _lib


def follow_loaded_library() -> Optional[str]:
    """Binds to a libmemtrack.so loaded since this module bound to the package's own copy.

    The runtime's allocations are counted by the runtime's library; a runtime
    loaded after the first use (imported inside a test) would otherwise leave
    this module reading counters nothing allocates through. Returns the new
    library's path, or None when nothing changed.
    """
    global _lib, _lib_path
    with _lock:
        if _lib is None or _lib_path != _shipped_library_path():
            return None
        loaded = loaded_library_path()
        if loaded is None:
            return None
        _lib, _lib_path = _declare(_open(loaded, already_loaded=True)), loaded
        return loaded


def library_path() -> str:
    """The path of the library :func:`library` bound to."""
    library()
    assert _lib_path is not None
    return _lib_path


def init(ring: Optional[str] = None) -> None:
    """Attach this process to ``ring`` (default: ``$MEMTRACK_RING``, else "default").

    Raises ``OSError`` naming the reason when the ring cannot be used.
    """
    lib = library()
    code = lib.memtrack_init(None if ring is None else os.fsencode(ring))
    if code != 0:
        reason = lib.memtrack_strerror(code).decode("utf-8", "replace")
        raise OSError(f"memtrack: cannot attach to ring {ring or os.environ.get('MEMTRACK_RING', 'default')}: {reason}")


def enabled() -> bool:
    """Whether this process records events."""
    return bool(library().memtrack_enabled())


def mark(label: str) -> None:
    """Record a phase marker (labels up to 1024 bytes are kept whole)."""
    library().memtrack_mark(label.encode("utf-8", "replace"))


def has_scopes() -> bool:
    """Whether the bound library has ``memtrack_scope_begin``/``_end``."""
    return hasattr(library(), "memtrack_scope_begin")


def scope_begin(name: str) -> None:
    lib = library()
    if hasattr(lib, "memtrack_scope_begin"):
        lib.memtrack_scope_begin(name.encode("utf-8", "replace"))


def scope_end() -> None:
    lib = library()
    if hasattr(lib, "memtrack_scope_end"):
        lib.memtrack_scope_end()


def live_cells() -> Dict[Tuple[int, int], Tuple[int, int]]:
    """{(device_id, kind code): (live bytes, live buffers)}, this process's nonzero cells."""
    lib = library()
    if not hasattr(lib, "memtrack_live_usage"):
        raise RuntimeError(f"memtrack: {_lib_path} predates memtrack_live_usage; live() needs a newer libmemtrack")
    capacity = 16
    while True:
        cells = (_Live * capacity)()
        count = lib.memtrack_live_usage(cells, capacity)
        if count <= capacity:
            return {(c.device_id, c.kind): (c.live_bytes, c.live_buffers) for c in cells[:count]}
        capacity = count


def has_untracked() -> bool:
    """Whether the bound library has ``memtrack_untracked_usage``."""
    return hasattr(library(), "memtrack_untracked_usage")


def untracked_usage() -> Tuple[int, int, int]:
    """(bytes, buffers, events) of this process that found the counter pool full.

    (0, 0, 0) with a library that predates ``memtrack_untracked_usage``: it
    cannot say (see :func:`has_untracked`).
    """
    lib = library()
    if not hasattr(lib, "memtrack_untracked_usage"):
        return (0, 0, 0)
    nbytes, buffers, events = ctypes.c_int64(), ctypes.c_int64(), ctypes.c_uint64()
    code = lib.memtrack_untracked_usage(ctypes.byref(nbytes), ctypes.byref(buffers), ctypes.byref(events))
    if code != 0:
        reason = lib.memtrack_strerror(code).decode("utf-8", "replace")
        raise RuntimeError(f"memtrack: memtrack_untracked_usage failed: {reason}")
    return (nbytes.value, buffers.value, events.value)
