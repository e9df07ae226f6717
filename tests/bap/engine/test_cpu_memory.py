"""bap.engine.cpu_memory: after retain_freed_memory() glibc serves big buffers from the heap and keeps them."""

import pathlib
import platform
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]

CHECK = textwrap.dedent(
    """
    import ctypes
    from bap.engine.cpu_memory import retain_freed_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 4 << 20

    def mmapped_while_held_and_heap_free_after():
        buffer = libc.malloc(size)
        held = libc.mallinfo2().hblks
        libc.free(buffer)
        return held, libc.mallinfo2().fordblks

    before = libc.mallinfo2().hblks
    held, _ = mmapped_while_held_and_heap_free_after()
    print(held > before)            # default glibc: a 4 MiB buffer is its own mmap
    print(retain_freed_memory())
    before = libc.mallinfo2().hblks
    held, free_after = mmapped_while_held_and_heap_free_after()
    print(held == before, free_after >= size)   # now: from the heap, and kept there once freed
    """
)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_big_buffers_come_from_the_heap_and_stay_there():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "True", "True"]


def arenas_of_threads(mode: str) -> list[str]:
    """In a fresh process (``limited``: after ``limit_arenas(2)``): what it printed, ending with how many arenas
    eight allocating threads use."""
    script = "import sys; from bap.engine.cpu_memory import limit_arenas; from tests.malloc_arenas import arenas_used"
    script += "; print(limit_arenas(2)) if sys.argv[1] == 'limited' else None; print(arenas_used(threads=8))"
    return subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True,
                          cwd=REPO).stdout.split()


@pytest.mark.slow  # over 7 s idle: left out of the fast loop
@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_threads_share_at_most_the_limited_number_of_arenas():
    assert int(arenas_of_threads("default")[0]) > 2  # default glibc: eight allocating threads get arenas of their own
    assert arenas_of_threads("limited") == ["True", "2"]
