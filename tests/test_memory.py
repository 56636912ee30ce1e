"""tracer.memory: freed blocks stay in the process (no page faults on the next
malloc), and TRACER_MALLOC=default leaves glibc alone. The app and CLI opt in at their
entry point; a plain `import tracer` leaves the process's malloc alone."""

import os
import subprocess
import sys

import pytest

CHECK = """
import ctypes, resource, sys
import tracer
tuned = tracer.keep_freed_memory() if sys.argv[1] == "opt-in" else False
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 24 << 20

def faults_for_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_for_block()  # the first block may fault its pages in
print(tuned, faults_for_block())
"""


def run(env_value, opt_in="opt-in"):
    env = {"TRACER_MALLOC": env_value} if env_value else {}
    out = subprocess.run([sys.executable, "-c", CHECK, opt_in], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **env})
    assert out.returncode == 0, out.stderr
    tuned, faults = out.stdout.split()
    return tuned == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_blocks_are_reused_without_page_faults():
    tuned, faults = run(None)
    assert tuned
    assert faults < 100  # a 24 MiB block is 6,144 pages: reused, not faulted in again


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_default_switch_leaves_glibc_alone():
    tuned, faults = run("default")
    assert not tuned
    assert faults > 6000  # glibc maps a 24 MiB block afresh and unmaps it on free


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_importing_the_library_leaves_malloc_alone():
    tuned, faults = run(None, opt_in="import-only")
    assert not tuned
    assert faults > 6000
