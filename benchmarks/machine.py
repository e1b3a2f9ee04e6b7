"""What machine a benchmark ran on and how busy it was, for its JSON and RESULTS.md."""
import os
import platform
import time


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def proc_status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, MiB. Unlike ``ru_maxrss``,
    VmHWM starts afresh at exec, so a child does not inherit the parent's high-water mark."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


class ForeignLoad:
    """CPU time used by *other* processes while we measure: busy time of all CPUs (/proc/stat)
    minus this process's own CPU time, divided by wall time, i.e. how many cores others took.
    Other jobs on a small machine make a 2-thread run wait for a core at every parallel op."""

    def __init__(self):
        self.start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float]:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
        except OSError:
            return time.perf_counter(), float("nan"), 0.0
        user, nice, system, idle, iowait, irq, softirq, steal = fields
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
        own = sum(os.times()[:2])
        return time.perf_counter(), busy, own

    def cores(self) -> float:
        (t0, busy0, own0), (t1, busy1, own1) = self.start, self._now()
        return max(0.0, ((busy1 - busy0) - (own1 - own0)) / max(t1 - t0, 1e-9))
