"""The GPU free-memory check: the decision from readings (NVML cannot run on this machine, so
readings are given as data), its grace wait on an injected clock, its settings from the
environment, and that without NVML it is skipped with one debug line."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from common.errors import ConfigError
from worker.gpus import (
    DEFAULT_MAX_USED_MIB,
    ENV_MAX_USED_MIB,
    GpuCheck,
    GpuMemory,
    GpuProcess,
    busy_gpus,
    read_gpu_memory,
)

H100_MIB = 81559.0
IDLE = 512.0  # what the driver itself holds on an idle GPU, roughly


def gpu(gpu_id: str, used_mib: float, *processes: GpuProcess) -> GpuMemory:
    return GpuMemory(gpu_id=gpu_id, used_mib=used_mib, total_mib=H100_MIB, processes=processes)


class FakeClock:
    """Time that moves only when the check sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def readings_in_turn(*turns: list[GpuMemory] | None):  # type: ignore[no-untyped-def]
    """A reader that answers each call with the next turn (the last one repeats)."""
    calls: list[Sequence[str]] = []

    def read(gpu_ids: Sequence[str]) -> list[GpuMemory] | None:
        calls.append(list(gpu_ids))
        return turns[min(len(calls), len(turns)) - 1]

    read.calls = calls  # type: ignore[attr-defined]
    return read


# -- the decision ------------------------------------------------------------------------------

def test_a_gpu_is_busy_only_above_the_limit_and_order_is_kept() -> None:
    readings = [gpu("5", 70000.0), gpu("2", IDLE), gpu("3", 2048.0), gpu("7", 2048.5)]
    assert [r.gpu_id for r in busy_gpus(readings, 2048.0)] == ["5", "7"]
    assert busy_gpus(readings, 80000.0) == []
    assert busy_gpus([], 0.0) == []


def test_the_description_names_the_gpu_its_memory_and_its_processes() -> None:
    held = gpu("2", 70112.4, GpuProcess(4242, 70000.0, "python3"), GpuProcess(77, None))
    assert held.describe() == ("GPU 2: 70112 of 81559 MiB in use by pid 4242 (python3, "
                               "70000 MiB), pid 77")
    assert "NVML lists no process" in gpu("3", 9000.0).describe()


# -- the grace wait ------------------------------------------------------------------------------

def test_a_gpu_whose_memory_is_freed_during_the_grace_wait_counts_as_free() -> None:
    """The previous engine on GPU 2 just exited; the driver frees its memory two reads later."""
    clock = FakeClock()
    read = readings_in_turn([gpu("2", 60000.0), gpu("3", IDLE)],
                            [gpu("2", 30000.0), gpu("3", IDLE)],
                            [gpu("2", IDLE), gpu("3", IDLE)])
    check = GpuCheck(wait_s=10.0, poll_s=1.0, read=read)
    assert check.busy(["2", "3"], clock=clock, sleep=clock.sleep) == []
    assert read.calls == [["2", "3"]] * 3 and clock.slept == [1.0, 1.0]


def test_a_gpu_still_busy_after_the_grace_wait_is_reported_with_its_last_reading() -> None:
    clock = FakeClock()
    held = gpu("5", 70000.0, GpuProcess(4242, 69500.0, "vllm"))
    check = GpuCheck(wait_s=3.0, poll_s=1.0, read=readings_in_turn([held, gpu("6", IDLE)]))
    assert check.busy(["5", "6"], clock=clock, sleep=clock.sleep) == [held]
    assert sum(clock.slept) == pytest.approx(3.0)  # never longer than the grace wait


def test_no_wait_reads_once() -> None:
    clock = FakeClock()
    read = readings_in_turn([gpu("0", 9000.0)])
    assert GpuCheck(wait_s=0.0, read=read).busy(["0"], clock=clock, sleep=clock.sleep) == [
        gpu("0", 9000.0)]
    assert len(read.calls) == 1 and clock.slept == []


def test_off_no_gpus_or_no_nvml_means_nothing_is_busy_and_nothing_is_read() -> None:
    read = readings_in_turn([gpu("0", 70000.0)])
    assert GpuCheck(max_used_mib=None, read=read).busy(["0"]) == []
    assert GpuCheck(read=read).busy([]) == []
    assert read.calls == []
    assert GpuCheck(read=readings_in_turn(None)).busy(["0", "1"]) == []


# -- settings ------------------------------------------------------------------------------------

def test_settings_come_from_the_node_environment() -> None:
    assert GpuCheck.from_env({}).max_used_mib == DEFAULT_MAX_USED_MIB == 2048.0
    assert GpuCheck.from_env({ENV_MAX_USED_MIB: " 4096 "}).max_used_mib == 4096.0
    assert GpuCheck.from_env({ENV_MAX_USED_MIB: "OFF"}) == GpuCheck.disabled()
    assert GpuCheck.disabled().max_used_mib is None


@pytest.mark.parametrize("value", ["lots", "-1", "nan", "inf"])
def test_a_bad_setting_names_the_variable_and_the_fix(value: str) -> None:
    with pytest.raises(ConfigError, match=f"{ENV_MAX_USED_MIB}=.*MiB.*off") as info:
        GpuCheck.from_env({ENV_MAX_USED_MIB: value})
    assert info.value.path == ENV_MAX_USED_MIB


# -- this machine ----------------------------------------------------------------------------

def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no package, library or driver: all mean "absent"
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.mark.skipif(_nvml_works(), reason="NVML works on this machine: nothing to skip")
def test_without_nvml_the_check_is_skipped_with_one_debug_line(
        caplog: pytest.LogCaptureFixture) -> None:
    """As on this machine (no NVIDIA driver): no reading, no error, one debug line."""
    caplog.set_level(logging.DEBUG, logger="worker.gpus")
    assert read_gpu_memory(["0", "1"]) is None
    assert [(r.levelno, r.getMessage().split(":")[0]) for r in caplog.records] == [
        (logging.DEBUG, "GPU free-memory check skipped")]
    caplog.clear()
    assert GpuCheck.from_env({}).busy(["0"]) == []
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.DEBUG


def test_the_adapter_uses_only_bindings_that_nvidia_ml_py_has() -> None:
    """NVML cannot run here; at least each ``pynvml.<name>`` worker/gpus.py calls exists in the
    installed package (a typo or a binding renamed upstream fails here, not on a GPU node)."""
    import pynvml

    import worker.gpus

    source = Path(worker.gpus.__file__).read_text()
    names = set(re.findall(r"\bpynvml\.(\w+)", source))
    assert {"nvmlInit", "nvmlDeviceGetMemoryInfo", "NVMLError"} <= names
    assert [name for name in sorted(names) if not hasattr(pynvml, name)] == []
