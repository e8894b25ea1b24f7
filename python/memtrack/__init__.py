"""memtrack for Python: read recordings, mark phases, watch this process's device memory.

See docs/python.md. The writer side (``mark``, ``scope``, ``enabled``, ``live``, ``untracked``)
goes through the process's one libmemtrack (the runtime's, if loaded).
"""

from __future__ import annotations

import functools
from typing import Dict, NamedTuple, Tuple

from . import _writer
from ._recording import EVENT_NAMES, KIND_NAMES, Obj, Recording, load
from ._writer import enabled, init, library_path, mark

__all__ = [
    "EVENT_NAMES",
    "KIND_NAMES",
    "Live",
    "Obj",
    "Recording",
    "Untracked",
    "enabled",
    "init",
    "library_path",
    "live",
    "load",
    "mark",
    "scope",
    "scopes_supported",
    "untracked",
    "untracked_supported",
]


class Live(NamedTuple):
    """Live usage of one (device, kind) by this process."""

    live_bytes: int
    live_buffers: int


def _kind_name(code: int) -> str:
    return KIND_NAMES[code] if code < len(KIND_NAMES) else f"KIND_{code}"


def live() -> Dict[Tuple[int, str], Live]:
    """This process's live device memory: {(device_id, kind name): Live(bytes, buffers)}.

    Read from this process's own live counters in the ring (no reader needed):
    every (device, kind) whose counters are nonzero. Empty when not tracking.
    """
    return {(device, _kind_name(kind)): Live(*usage) for (device, kind), usage in _writer.live_cells().items()}


class Untracked(NamedTuple):
    """This process's events that found the ring's counter pool full, and their live usage."""

    live_bytes: int
    live_buffers: int
    events: int


def untracked() -> Untracked:
    """What :func:`live` cannot show: this process's usage that found the counter pool full.

    A ring's live counters have a bounded pool of cells (``MEMTRACK_COUNTER_CELLS``,
    read when the ring is created; one cell per thread, device and kind in use).
    An allocation or free that finds no cell is counted here instead, for all
    devices and kinds together: ``events`` counts them, ``live_bytes`` and
    ``live_buffers`` are their net live usage. While ``events`` is 0,
    :func:`live` is complete. Zeros when not tracking, and also with a
    libmemtrack that predates ``memtrack_untracked_usage`` (it cannot say:
    :func:`untracked_supported` is then False).
    """
    return Untracked(*_writer.untracked_usage())


def untracked_supported() -> bool:
    """Whether the bound libmemtrack reports :func:`untracked` (``memtrack_untracked_usage``)."""
    return _writer.has_untracked()


def scopes_supported() -> bool:
    """Whether the bound libmemtrack records scopes (``memtrack_scope_begin``).

    Until it does, :func:`scope` is a no-op.
    """
    return _writer.has_scopes()


class scope:
    """``with memtrack.scope("name"):`` or ``@memtrack.scope("name")``: a named region.

    Calls ``memtrack_scope_begin``/``memtrack_scope_end`` of the bound library;
    a no-op with a library that does not export them (see ``scopes_supported``).
    """

    def __init__(self, name: str):
        self.name = name

    def __enter__(self) -> "scope":
        _writer.scope_begin(self.name)
        return self

    def __exit__(self, *exc) -> None:
        _writer.scope_end()

    def __call__(self, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            with scope(self.name):
                return function(*args, **kwargs)

        return wrapper
