"""The node's GPUs as NVML sees them: is each GPU a trial was given free before an engine
goes on it?

Ray hands out GPU ids from its own accounting; it cannot see a process outside Ray holding a GPU
(an engine left running by a killed trial, someone's notebook). Launching onto such a GPU ends
in a CUDA out-of-memory that would be scored as the config's fault. So both launchers ask
``GpuCheck.busy`` first and fail the trial as ``infra_error`` when a GPU is taken.

The only module that touches NVML (``pynvml``, from the ``nvidia-ml-py`` package), imported
lazily inside ``read_gpu_memory``. Where the package, the NVML library or the driver is missing
(machines without GPUs, as in CI), ``read_gpu_memory`` returns ``None`` and the check is skipped
with one debug log line. Everything else here is pure: ``busy_gpus`` decides from readings, so
it is tested without NVML.

GPU ids are the host ids Ray assigns (``ray.get_gpu_ids()``): an index (NVML's index, the
order ``nvidia-smi`` lists and the NVIDIA Container Toolkit uses) or a ``GPU-``/``MIG-`` UUID. An
id NVML does not know, or a query the driver refuses, skips that GPU with a warning: the check
guards against a busy GPU, it does not decide whether a GPU exists.

Settings come from the environment of the process that launches the engine (the Ray node's):
``SERVETUNE_GPU_MAX_USED_MIB`` is the memory a GPU may have in use and still count as free
(default 2048 MiB: above what the driver itself holds on an idle GPU, far below any engine's
footprint); ``off`` turns the check off.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_MAX_USED_MIB = "SERVETUNE_GPU_MAX_USED_MIB"
DEFAULT_MAX_USED_MIB = 2048.0
# The driver frees an exited process's memory shortly after the exit, not at once: a GPU whose
# previous engine just stopped is read again for this long before it counts as busy.
DEFAULT_WAIT_S = 10.0
DEFAULT_POLL_S = 1.0
MIB = 1 << 20


@dataclass(frozen=True)
class GpuProcess:
    """A process NVML lists on a GPU: host pid, its memory (None where NVML cannot tell) and
    its name where NVML knows it."""

    pid: int
    used_mib: float | None = None
    name: str = ""

    def describe(self) -> str:
        """``pid 4242 (python3, 70000 MiB)``; what NVML does not tell is left out."""
        details = [self.name] if self.name else []
        if self.used_mib is not None:
            details.append(f"{self.used_mib:.0f} MiB")
        return f"pid {self.pid}" + (f" ({', '.join(details)})" if details else "")


@dataclass(frozen=True)
class GpuMemory:
    """One GPU's memory at one moment: ``gpu_id`` as the trial names it, MiB used and total,
    and the processes NVML lists on it (compute and graphics)."""

    gpu_id: str
    used_mib: float
    total_mib: float
    processes: tuple[GpuProcess, ...] = ()

    def describe(self) -> str:
        """``GPU 2: 70112 of 81559 MiB in use by pid 4242 (python3, 70000 MiB)``."""
        text = f"GPU {self.gpu_id}: {self.used_mib:.0f} of {self.total_mib:.0f} MiB in use"
        if self.processes:
            text += " by " + ", ".join(process.describe() for process in self.processes)
        else:
            text += " (NVML lists no process: one in another container or namespace?)"
        return text


# gpu ids -> their readings, or None where NVML is not available on this node.
GpuReader = Callable[[Sequence[str]], list[GpuMemory] | None]


def busy_gpus(readings: Sequence[GpuMemory], max_used_mib: float) -> list[GpuMemory]:
    """The readings of GPUs with more than ``max_used_mib`` MiB in use, in the given order."""
    return [reading for reading in readings if reading.used_mib > max_used_mib]


def read_gpu_memory(gpu_ids: Sequence[str]) -> list[GpuMemory] | None:
    """NVML's readings of ``gpu_ids`` (ids NVML does not know are left out, with a warning);
    ``None`` when NVML cannot be used here (no ``pynvml``, no library, no driver)."""
    try:
        import pynvml
    except ImportError:
        logger.debug("GPU free-memory check skipped: the nvidia-ml-py package is not installed")
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        logger.debug("GPU free-memory check skipped: NVML is not available here (%s)", e)
        return None
    try:
        readings = []
        for gpu_id in gpu_ids:
            try:
                readings.append(_read_one(pynvml, gpu_id))
            except (pynvml.NVMLError, ValueError) as e:  # ValueError: not an index or UUID
                logger.warning("GPU free-memory check: NVML cannot read GPU %s (%s); not "
                               "checked", gpu_id, e)
        return readings
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


@dataclass(frozen=True)
class GpuCheck:
    """How a launcher checks the trial's GPUs before it starts an engine on them.

    ``max_used_mib``: the most memory a free GPU may have in use (None: no check).
    ``wait_s``: how long a GPU over the limit is read again (every ``poll_s``) before it counts
    as busy. ``read``: where readings come from (NVML here; tests pass a function of their own).
    Immutable and thread-safe; ``busy`` holds no state between calls.
    """

    max_used_mib: float | None = DEFAULT_MAX_USED_MIB
    wait_s: float = DEFAULT_WAIT_S
    poll_s: float = DEFAULT_POLL_S
    read: GpuReader = field(default=read_gpu_memory, compare=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> GpuCheck:
        """The check ``SERVETUNE_GPU_MAX_USED_MIB`` asks for (module docstring); raises
        ``ConfigError`` naming the variable for a value that is neither ``off`` nor MiB >= 0."""
        environ = os.environ if environ is None else environ
        text = environ.get(ENV_MAX_USED_MIB, "").strip()
        if not text:
            return cls()
        if text.lower() in ("off", "false", "no", "none"):
            return cls.disabled()
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 <= value < math.inf:
            raise ConfigError(f"{ENV_MAX_USED_MIB}={text!r} is neither a memory in MiB (>= 0) "
                              "nor 'off'; e.g. 2048, or off to skip the GPU free-memory check",
                              path=ENV_MAX_USED_MIB, value=text)
        return cls(max_used_mib=value)

    @classmethod
    def disabled(cls) -> GpuCheck:
        """No check (the simulated engine's GPU ids are Ray's logical ids, not devices)."""
        return cls(max_used_mib=None)

    def busy(self, gpu_ids: Sequence[str], *, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> list[GpuMemory]:
        """The GPUs of ``gpu_ids`` still over the limit after ``wait_s``; [] when all are
        free, when there are none, when the check is off and when NVML is not available."""
        if self.max_used_mib is None or not gpu_ids:
            return []
        deadline = clock() + self.wait_s
        waited = False
        while True:
            readings = self.read(gpu_ids)
            if readings is None:
                return []
            busy = busy_gpus(readings, self.max_used_mib)
            if not busy or clock() >= deadline:
                return busy
            if not waited:
                logger.info("waiting up to %g s for GPU memory to be freed: %s", self.wait_s,
                            "; ".join(reading.describe() for reading in busy))
                waited = True
            sleep(max(min(self.poll_s, deadline - clock()), 0.0))


def _read_one(pynvml: Any, gpu_id: str) -> GpuMemory:
    if gpu_id.startswith(("GPU-", "MIG-")):
        handle = pynvml.nvmlDeviceGetHandleByUUID(gpu_id)
    else:
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    processes: dict[int, GpuProcess] = {}
    for lister in (pynvml.nvmlDeviceGetComputeRunningProcesses,
                   pynvml.nvmlDeviceGetGraphicsRunningProcesses):
        try:
            listed = lister(handle)
        except pynvml.NVMLError as e:  # e.g. not supported on this GPU or driver
            logger.debug("NVML cannot list the processes of GPU %s: %s", gpu_id, e)
            continue
        for info in listed:
            used = getattr(info, "usedGpuMemory", None)
            processes.setdefault(int(info.pid), GpuProcess(
                pid=int(info.pid), used_mib=used / MIB if isinstance(used, int) else None,
                name=_process_name(pynvml, int(info.pid))))
    return GpuMemory(gpu_id=gpu_id, used_mib=memory.used / MIB, total_mib=memory.total / MIB,
                     processes=tuple(processes.values()))


def _process_name(pynvml: Any, pid: int) -> str:
    try:
        name = pynvml.nvmlSystemGetProcessName(pid)
    except pynvml.NVMLError:
        return ""
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)
