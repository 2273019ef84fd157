"""The server's own memory allocator limits, set at start, so that a bare `enrich serve` (systemd, a notebook, a
shell) holds what the container image holds, with no environment variable.

glibc's malloc gives a thread that allocates while another holds the heap an arena of its own, up to eight per
core, each keeping the memory its thread freed: a server's many threads (gRPC's, the decode pool, the model's)
then hold several times what it uses. MALLOC_ARENA_MAX in the environment limits that; glibc also takes the same
limit from the process itself (mallopt), as long as no thread has started. (glibc's mmap threshold stays dynamic:
fixed low, every large tensor of an eager torch model became a fresh mapping, and serving slowed.)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # <malloc.h>
ARENAS = 2
ENVIRONMENT = "MALLOC_ARENA_MAX"


def limit_allocator() -> bool:
    """Limits glibc's malloc arenas, unless the environment chose a limit itself. Returns whether it set one
    (False where the C library is not glibc)."""
    if ENVIRONMENT in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to limit this way
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_ARENA_MAX, ARENAS) == 1
