"""Terminal progress line with throughput and ETA (rank 0 prints it).

    step   120/1000  12.0% | loss 0.5321 | lr 1.20e-04 | 45.2 tiles/s | 0.71 s/step | ETA 0:10:24

The ETA uses an exponential moving average of the step time, so the slow first steps (start-up,
loader warm-up) fade out instead of inflating it for the whole run.
"""
from __future__ import annotations

import sys
import time

__all__ = ["Progress", "format_eta"]


def format_eta(seconds: float) -> str:
    """'H:MM:SS', or 'D days, H:MM:SS' past a day; '?' when unknown."""
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    clock = f"{h}:{m:02d}:{s:02d}"
    return f"{days} day{'s' if days > 1 else ''}, {clock}" if days else clock


class Progress:
    """Tracks step times; `update(step)` after each optimizer step, `line(...)` to print."""

    def __init__(self, total_steps: int, start_step: int = 0, smoothing: float = 0.9,
                 clock=time.perf_counter):
        self.total, self.step, self.smoothing, self.clock = total_steps, start_step, smoothing, clock
        self.last = clock()
        self.step_time: float | None = None

    def update(self, step: int) -> float:
        """Record that optimizer step `step` (count of completed steps) finished; returns the
        mean seconds per step since the previous update."""
        now = self.clock()
        done = max(1, step - self.step)
        dt = (now - self.last) / done
        self.step, self.last = step, now
        a = self.smoothing
        self.step_time = dt if self.step_time is None else a * self.step_time + (1 - a) * dt
        return dt

    def eta(self) -> float:
        if self.step_time is None:
            return float("nan")
        return self.step_time * max(0, self.total - self.step)

    def line(self, metrics: dict[str, float]) -> str:
        width = len(str(self.total))
        parts = [f"step {self.step:>{width}}/{self.total} {100.0 * self.step / self.total:5.1f}%"]
        if "loss" in metrics:
            parts.append(f"loss {metrics['loss']:.4f}")
        if "lr" in metrics:
            parts.append(f"lr {metrics['lr']:.2e}")
        if "perf/tiles_per_s" in metrics:
            parts.append(f"{metrics['perf/tiles_per_s']:.1f} tiles/s")
        if "perf/mfu" in metrics:
            parts.append(f"MFU {100 * metrics['perf/mfu']:.1f}%")
        if self.step_time is not None:
            parts.append(f"{self.step_time:.2f} s/step")
        parts.append(f"ETA {format_eta(self.eta())}")
        return " | ".join(parts)

    def print(self, metrics: dict[str, float], stream=None) -> None:
        stream = stream or sys.stdout
        print(self.line(metrics), file=stream, flush=True)
