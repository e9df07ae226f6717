"""How many glibc malloc arenas a process's threads use: for tests of ``bap.engine.cpu_memory.limit_arenas``."""

import ctypes
import re
import tempfile
import threading


def arenas_used(threads: int) -> int:
    """Start ``threads`` threads that each allocate and stay alive (so none hands its arena on to another), and
    count the arenas in glibc's ``malloc_info`` report while they hold their memory."""
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.fopen.restype = ctypes.c_void_p
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    allocated = threading.Barrier(threads + 1)

    def allocate_and_hold() -> None:
        libc.malloc(1000)
        allocated.wait()
        allocated.wait()

    workers = [threading.Thread(target=allocate_and_hold) for _ in range(threads)]
    for worker in workers:
        worker.start()
    allocated.wait()
    with tempfile.NamedTemporaryFile("r") as report:
        stream = libc.fopen(report.name.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        count = len(re.findall(r'<heap nr="', report.read()))
    allocated.wait()
    for worker in workers:
        worker.join()
    return count
