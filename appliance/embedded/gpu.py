"""Which device the local LLM runs on: the GPU when both the host and the llama.cpp build
have one, else the CPU.

Two inputs, both gathered without importing the runtime:

- the host (`probe_host`): NVIDIA when ``/dev/nvidia0`` exists or ``nvidia-smi -L`` lists a
  GPU; AMD ROCm when ``/dev/kfd`` exists; Vulkan when ``vulkaninfo --summary`` succeeds or a
  DRM render node (``/dev/dri/renderD*``) exists;
- the build (`Device` values from the runtime's own device list, read in the child that
  loaded it): the CPU wheel on PyPI lists only ``CPU``; the CUDA, ROCm and Vulkan wheels list
  ``CUDA0``, ``ROCm0``, ``Vulkan0`` ... when their driver finds a device.

`choose` is a pure function of the two, so every row of its table is unit-tested with fake
inputs on a machine without a GPU. A GPU device the build lists but the host probe cannot
confirm (a software Vulkan driver, a device node hidden from a container) is not used: a
wrong guess costs a crash on the first prompt, a missed GPU only speed.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

DeviceChoice = Literal["auto", "cpu"]

# llama.cpp offloads at most as many layers as the model has: "all of them".
ALL_LAYERS: Final = 999
# A backend name prefix in the build's device list -> the host GPU kind that confirms it.
_CONFIRMED_BY: Final = {"cuda": ("cuda",), "rocm": ("rocm",), "hip": ("rocm",),
                        "vulkan": ("vulkan", "cuda", "rocm"), "metal": ("metal",), "sycl": ("vulkan",)}
GPU_WHEELS_HINT: Final = ("for GPU speed install the xllamacpp CUDA, ROCm or Vulkan wheel in place of "
                          "the CPU one (docs/inference.md)")


@dataclass(frozen=True, slots=True)
class HostGpus:
    """GPU kinds found on this host, each with how it was found (for the log line)."""

    found: dict[str, str]

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(self.found)

    def describe(self) -> str:
        return ", ".join(f"{k} ({how})" for k, how in sorted(self.found.items())) or "none"


@dataclass(frozen=True, slots=True)
class Device:
    """One device the loaded llama.cpp build reports (`name` like ``CUDA0``, ``Vulkan0``, ``CPU``)."""

    name: str
    description: str
    gpu: bool

    @property
    def backend(self) -> str:
        return self.name.rstrip("0123456789").lower()


@dataclass(frozen=True, slots=True)
class Choice:
    gpu_layers: int
    build: str           # "cpu", "cuda", "vulkan", ... : what the loaded build can drive
    device: str          # where the layers go: "CPU" or a device name like "CUDA0"
    line: str            # one line for the console and the log

    @property
    def on_gpu(self) -> bool:
        return self.gpu_layers > 0


Runner = Callable[[Sequence[str]], bool]


def _runs(cmd: Sequence[str]) -> bool:
    """Whether `cmd` exits 0 within 5 s (a missing tool or a driver that hangs counts as no)."""
    try:
        return subprocess.run(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, timeout=5, check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def probe_host(dev: Path = Path("/dev"), which: Callable[[str], str | None] = shutil.which,
               runs: Runner = _runs) -> HostGpus:
    """The GPU kinds on this host, from device nodes first and the vendors' tools second."""
    found: dict[str, str] = {}
    if (dev / "nvidia0").exists():
        found["cuda"] = f"{dev / 'nvidia0'}"
    elif which("nvidia-smi") and runs(["nvidia-smi", "-L"]):
        found["cuda"] = "nvidia-smi"
    if (dev / "kfd").exists():
        found["rocm"] = f"{dev / 'kfd'}"
    if which("vulkaninfo") and runs(["vulkaninfo", "--summary"]):
        found["vulkan"] = "vulkaninfo"
    else:
        render = sorted((dev / "dri").glob("renderD*")) if (dev / "dri").is_dir() else []
        if render:
            found["vulkan"] = str(render[0])
    return HostGpus(found)


def _build_name(devices: Sequence[Device]) -> str:
    gpu = sorted({d.backend for d in devices if d.gpu})
    return "+".join(gpu) if gpu else "cpu"


def choose(devices: Sequence[Device], host: HostGpus, requested: DeviceChoice = "auto") -> Choice:
    """Where the model's layers go, and one line saying which build was loaded and why."""
    build = _build_name(devices)
    label = "CPU build" if build == "cpu" else f"{build.upper()} build"
    if requested == "cpu":
        return Choice(0, build, "CPU", f"{label}, on the CPU (local_llm_device=cpu)")
    usable = [d for d in devices if d.gpu and host.kinds & set(_CONFIRMED_BY.get(d.backend, ()))]
    if usable:
        d = usable[0]
        return Choice(ALL_LAYERS, build, d.name, f"{label}, on the GPU {d.name} ({d.description})")
    unconfirmed = [d for d in devices if d.gpu]
    if unconfirmed:
        return Choice(0, build, "CPU", f"{label}, on the CPU: the host shows no GPU for "
                                      f"{unconfirmed[0].name} (found: {host.describe()})")
    if host.kinds:
        return Choice(0, build, "CPU", f"{label}, on the CPU; this host has a GPU "
                                      f"({host.describe()}): {GPU_WHEELS_HINT}")
    return Choice(0, build, "CPU", f"{label}, on the CPU (no GPU on this host)")
