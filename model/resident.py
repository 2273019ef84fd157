"""Give back the memory of weight files a runtime has mapped but no longer reads.

OpenVINO maps each graph's .bin file and, on the first passes, copies the weights into its own layout for
this CPU's kernels. The mapped pages, read once, would stay resident in the server process (and charged to
its container) for as long as it runs."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("enrich.backends")

MADV_DONTNEED = 4  # <sys/mman.h> on Linux


def resident_bytes(files: list[Path]) -> int:
    """How much of `files` this process's mappings hold in memory (0 off Linux)."""
    names = {str(path.resolve()) for path in files}
    total, counting = 0, False
    try:
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                if line[0] in "0123456789abcdef" and "-" in line.split(maxsplit=1)[0]:
                    counting = line.split(maxsplit=5)[-1].strip() in names
                elif counting and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


def drop_mapped_pages(files: list[Path]) -> int:
    """Drop this process's pages of read-only mappings of `files`, and the files' page cache; a page read
    again later comes back from the file. Returns how many mappings it released (0 off Linux)."""
    if not sys.platform.startswith("linux"):
        return 0
    names = {str(path.resolve()) for path in files}
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    released = 0
    with open("/proc/self/maps") as maps:
        regions = [line.split(maxsplit=5) for line in maps]
    for region in regions:
        # Writable (copy-on-write) pages would lose what was written: only read-only mappings are dropped.
        if len(region) == 6 and region[5].strip() in names and region[1].startswith("r-"):
            start, end = (int(address, 16) for address in region[0].split("-"))
            if libc.madvise(start, end - start, MADV_DONTNEED) == 0:
                released += 1
            else:
                log.debug("madvise failed on %s: errno %d", region[5].strip(), ctypes.get_errno())
    for name in names:
        try:
            descriptor = os.open(name, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
    return released
