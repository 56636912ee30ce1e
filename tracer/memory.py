"""Keep freed memory in the process (glibc only).

A trace allocates and frees many multi-megabyte arrays whose sizes change from
one forward to the next, so MLX's buffer cache (which reuses a buffer only for
about the same size) often misses and calls malloc. With glibc's defaults each
worker thread gets its own arena and big blocks are handed back to the kernel
on free, so the next malloc faults fresh pages in and the kernel zeroes them.
Profiled on our 2-core machine, the kernel's share of a trace's CPU time fell
from 8.5% to 3.5% with one arena that keeps what it frees; the price is that
the process holds on to its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV_VAR = "TRACER_MALLOC"  # "default" leaves glibc's settings alone

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

_settings = {
    _M_ARENA_MAX: 1,  # every thread allocates from the main heap, so what one frees another reuses
    _M_MMAP_THRESHOLD: 32 << 20,  # blocks up to glibc's maximum (32 MiB) come from the heap...
    _M_TRIM_THRESHOLD: 1 << 30,  # ...which is not shrunk while less than 1 GiB of it is free
    _M_TOP_PAD: 64 << 20,  # and grows in 64 MiB steps
}


def keep_freed_memory() -> bool:
    """Apply the settings above; True where they took effect (Linux with glibc)."""
    if not sys.platform.startswith("linux") or os.environ.get(ENV_VAR, "").lower() == "default":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(mallopt(param, value) == 1 for param, value in _settings.items())
