"""Cost of a computation: wall seconds, device seconds and peak memory, on CUDA or the CPU."""
from __future__ import annotations

import os
import threading
import time

import torch
from torch import nn

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident memory in bytes (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


class CostMeter:
    """Context manager measuring the enclosed block.

    `wall_seconds`: elapsed time. `device_seconds`: CUDA-event time on a GPU, process CPU time (all threads)
    on the CPU. `peak_memory_bytes`: peak CUDA memory allocated on a GPU, peak resident memory of the process
    (sampled every 20 ms) on the CPU.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.wall_seconds = self.device_seconds = 0.0
        self.peak_memory_bytes = 0

    def __enter__(self) -> "CostMeter":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_event = torch.cuda.Event(enable_timing=True)
            self._end_event = torch.cuda.Event(enable_timing=True)
            self._start_event.record(torch.cuda.current_stream(self.device))  # this job's GPU, not cuda:0
        else:
            self._cpu0 = time.process_time()
            self._stop = threading.Event()
            self.peak_memory_bytes = resident_bytes()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        self._wall0 = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_memory_bytes = max(self.peak_memory_bytes, resident_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self._end_event.record(torch.cuda.current_stream(self.device))
            torch.cuda.synchronize(self.device)
            self.device_seconds = self._start_event.elapsed_time(self._end_event) / 1000
            self.peak_memory_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._sampler.join()
            self.peak_memory_bytes = max(self.peak_memory_bytes, resident_bytes())
            self.device_seconds = time.process_time() - self._cpu0
        self.wall_seconds = time.perf_counter() - self._wall0


def state_bytes(model: nn.Module) -> int:
    """Bytes of `model`'s state dict (parameters and buffers): what a checkpoint of it stores."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())
