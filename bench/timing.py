"""Honest timing helpers for the benchmarks: CUDA runs asynchronously, so every timer waits for it."""
import os
import time

import torch


def sync(device):
    """CUDA runs asynchronously: wait for the queue to drain so a timer sees the real work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device):
    """Wrap fn so that the GPU is idle when the timer starts and finished when it stops."""
    def run():
        sync(device)
        out = fn()
        sync(device)
        return out
    return run


def loop_efficiency(loop, model, x, t, steps, device, pairs=3, calls=20):
    """(steps x one model forward) / one loop, each pair measured back to back so that both see the same
    machine state (a shared CPU's speed drifts over a run); the median of `pairs` ratios."""
    ratios = []
    with torch.no_grad():
        for _ in range(pairs):
            sync(device)
            start = time.perf_counter()
            loop()
            sync(device)
            loop_time = time.perf_counter() - start
            start = time.perf_counter()
            for _ in range(calls):
                model(x, t)
            sync(device)
            forward = (time.perf_counter() - start) / calls
            ratios.append(steps * forward / loop_time)
    return sorted(ratios)[len(ratios) // 2], forward


def describe(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
