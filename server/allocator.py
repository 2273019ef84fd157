"""The server's own memory allocator limits, set at start, so that a bare `enrich serve` (systemd, a notebook, a
shell) holds what the container image holds, with no environment variable.

glibc's malloc gives a thread that allocates while another holds the heap an arena of its own, up to eight per
core, each keeping the memory its thread freed: a server's many threads (gRPC's, the decode pool, the model's)
then hold several times what it uses. And after a large buffer is freed, glibc raises the size from which it maps
buffers on their own (up to 32 MB), so that later ones come from an arena, which keeps them: decoded images and
batches are such buffers. glibc takes both limits from the process itself (mallopt), as from MALLOC_ARENA_MAX and
MALLOC_MMAP_THRESHOLD_, as long as no thread has started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # <malloc.h>
ARENAS = 2
MAPPED_FROM = 256 * 1024  # bytes: larger buffers get their own mapping, returned to the system when freed
LIMITS = {"MALLOC_ARENA_MAX": (M_ARENA_MAX, ARENAS), "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, MAPPED_FROM)}


def limit_allocator() -> list[str]:
    """Sets glibc's limits that the environment did not set itself. Returns the names of those it set (none where
    the C library is not glibc)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to limit this way
        return []
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return [name for name, (parameter, value) in LIMITS.items()
            if name not in os.environ and mallopt(parameter, value) == 1]
