"""A fake accelerator runtime: allocates "device memory" through libmemtrack.so, as tt_metal does.

It loads the library named by ``$FAKE_RUNTIME_LIB`` (a real libmemtrack.so built
by cargo) with ctypes, the way a runtime that links it would have it loaded
before any Python code of the user runs.
"""

import ctypes
import itertools
import os

DRAM, L1 = 0, 1

_lib = ctypes.CDLL(os.environ["FAKE_RUNTIME_LIB"], mode=ctypes.RTLD_GLOBAL)
_lib.memtrack_alloc.argtypes = [ctypes.c_uint32, ctypes.c_uint8, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64]
_lib.memtrack_free.argtypes = _lib.memtrack_alloc.argtypes
_ids = itertools.count(1)


class Buffer:
    """A device buffer: allocated on creation, freed by ``free()``."""

    def __init__(self, size, device=0, kind=DRAM):
        self.id, self.size, self.device, self.kind = next(_ids), size, device, kind
        self.address = 0x1000 * self.id
        _lib.memtrack_alloc(device, kind, self.id, self.address, size)

    def free(self):
        _lib.memtrack_free(self.device, self.kind, self.id, self.address, self.size)


def library_path():
    return os.environ["FAKE_RUNTIME_LIB"]
