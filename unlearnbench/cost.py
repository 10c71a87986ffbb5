"""Cost of a computation: wall seconds, device seconds and the extra memory it needs, on CUDA or the CPU."""
from __future__ import annotations

import ctypes
import os
import threading
import time

import torch
from torch import nn

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SAMPLE_SECONDS = 0.02  # how often the CPU memory in use is polled during a measured block


class _MallInfo2(ctypes.Structure):
    """glibc's `struct mallinfo2`: every field a size_t (bytes or block counts)."""

    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


def _load_mallinfo2():
    """glibc's mallinfo2() (glibc 2.33 or later) as a ctypes function, or None where the C library lacks it."""
    try:
        function = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError, TypeError):
        return None
    function.argtypes, function.restype = [], _MallInfo2
    return function


_MALLINFO2 = _load_mallinfo2()


def resident_bytes() -> int:
    """This process's resident memory in bytes (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def heap_bytes() -> int:
    """Bytes of this process's live C-heap allocations, where torch keeps its CPU tensors: glibc mallinfo2()'s
    `uordblks` (in use in every thread's arena) + `hblkhd` (in blocks mapped on their own: large tensors). Without
    glibc's mallinfo2, the resident memory (whose growth misses freed memory that is used again)."""
    if _MALLINFO2 is None:
        return resident_bytes()
    info = _MALLINFO2()
    return info.uordblks + info.hblkhd


class CostMeter:
    """Context manager measuring the enclosed block.

    `wall_seconds`: elapsed seconds. `device_seconds`: CUDA-event seconds on a GPU, process CPU seconds (all
    threads) on the CPU. `peak_memory_bytes`: the extra memory the block needed, in bytes: the peak of what is in
    use during the block minus what was in use when it started, so data and models already held are not counted.
    On a GPU, torch's CUDA allocations (exact peak); on the CPU, `heap_bytes()` polled every SAMPLE_SECONDS and at
    the end (a peak shorter than that can be missed). Meters may nest.
    """

    _open_cuda: list["CostMeter"] = []  # CUDA meters inside which another one may reset the peak statistics

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.wall_seconds = self.device_seconds = 0.0
        self.peak_memory_bytes = 0

    def __enter__(self) -> "CostMeter":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            for outer in self._open_cuda:  # keep the enclosing meters' peak so far before resetting it
                if outer.device == self.device:
                    outer._peak = max(outer._peak, torch.cuda.max_memory_allocated(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = self._peak = torch.cuda.memory_allocated(self.device)
            self._open_cuda.append(self)
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._end_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record(torch.cuda.current_stream(self.device))  # this job's GPU, not cuda:0
        else:
            self._cpu0 = time.process_time()
            self._stop = threading.Event()
            self._start = self._peak = heap_bytes()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        self._wall0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._peak = max(self._peak, heap_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self._end_event.record(torch.cuda.current_stream(self.device))
            torch.cuda.synchronize(self.device)
            self.device_seconds = self._start_event.elapsed_time(self._end_event) / 1000
            self._peak = max(self._peak, torch.cuda.max_memory_allocated(self.device))
            self._open_cuda.remove(self)
        else:
            self._stop.set()
            self._sampler.join()
            self._peak = max(self._peak, heap_bytes())
            self.device_seconds = time.process_time() - self._cpu0
        self.peak_memory_bytes = self._peak - self._start
        self.wall_seconds = time.perf_counter() - self._wall0


def state_bytes(model: nn.Module) -> int:
    """Bytes of `model`'s state dict (parameters and buffers): what a checkpoint of it stores."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
