"""Where the local LLM runs (appliance/embedded/gpu.py), with the host and the build faked:
this machine has no GPU, so every row is decided from fake device nodes, tools and device lists."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from appliance.embedded.gpu import ALL_LAYERS, Device, HostGpus, choose, probe_host
from appliance.embedded.llama_server import build_devices

CPU = Device("CPU", "AMD EPYC", gpu=False)
CUDA = Device("CUDA0", "NVIDIA GeForce RTX 4070", gpu=True)
VULKAN = Device("Vulkan0", "AMD Radeon RX 7800 XT (RADV NAVI32)", gpu=True)


def fake_dev(tmp_path: Path, *nodes: str) -> Path:
    for node in nodes:
        (tmp_path / node).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / node).touch()
    return tmp_path


def tools(*working: str) -> tuple[object, object]:
    """A fake `which` and `runs`: the named tools exist and succeed, the rest are absent."""
    def which(name: str) -> str | None:
        return f"/usr/bin/{name}" if name in working else None

    def runs(cmd: Sequence[str]) -> bool:
        return cmd[0] in working
    return which, runs


@pytest.mark.parametrize(("nodes", "working", "kinds"), [
    ((), (), set()),
    (("nvidia0", "nvidiactl"), (), {"cuda"}),
    ((), ("nvidia-smi",), {"cuda"}),
    (("dri/renderD128",), (), {"vulkan"}),
    ((), ("vulkaninfo",), {"vulkan"}),
    (("kfd", "dri/renderD128"), (), {"rocm", "vulkan"}),
    (("dri/card0",), (), set()),          # a display without a render node is no compute device
])
def test_the_host_probe_reads_device_nodes_and_tools(tmp_path: Path, nodes: tuple[str, ...],
                                                      working: tuple[str, ...], kinds: set[str]) -> None:
    which, runs = tools(*working)
    host = probe_host(fake_dev(tmp_path, *nodes), which=which, runs=runs)  # type: ignore[arg-type]
    assert host.kinds == kinds


def test_a_tool_that_fails_is_no_gpu(tmp_path: Path) -> None:
    host = probe_host(tmp_path, which=lambda name: f"/usr/bin/{name}", runs=lambda cmd: False)
    assert host.kinds == frozenset()


def test_the_cpu_wheel_on_a_host_without_a_gpu_runs_on_the_cpu() -> None:
    choice = choose([CPU], HostGpus({}))
    assert (choice.gpu_layers, choice.build, choice.device) == (0, "cpu", "CPU")
    assert choice.line == "CPU build, on the CPU (no GPU on this host)"


def test_the_cpu_wheel_on_a_gpu_host_says_how_to_use_the_gpu() -> None:
    choice = choose([CPU], HostGpus({"cuda": "/dev/nvidia0"}))
    assert choice.gpu_layers == 0 and choice.build == "cpu"
    assert "this host has a GPU (cuda (/dev/nvidia0))" in choice.line and "CUDA" in choice.line


def test_a_cuda_build_with_an_nvidia_gpu_offloads_every_layer() -> None:
    choice = choose([CUDA, CPU], HostGpus({"cuda": "nvidia-smi"}))
    assert choice.on_gpu and choice.gpu_layers == ALL_LAYERS
    assert (choice.build, choice.device) == ("cuda", "CUDA0")
    assert choice.line == "CUDA build, on the GPU CUDA0 (NVIDIA GeForce RTX 4070)"


def test_a_vulkan_build_uses_a_render_node_or_an_nvidia_driver() -> None:
    assert choose([VULKAN, CPU], HostGpus({"vulkan": "/dev/dri/renderD128"})).device == "Vulkan0"
    assert choose([VULKAN, CPU], HostGpus({"cuda": "/dev/nvidia0"})).on_gpu


def test_a_gpu_device_the_host_does_not_confirm_stays_on_the_cpu() -> None:
    choice = choose([CUDA, CPU], HostGpus({}))
    assert choice.gpu_layers == 0 and choice.build == "cuda" and choice.device == "CPU"
    assert "the host shows no GPU for CUDA0" in choice.line


def test_cpu_forced_by_config_wins_over_a_gpu() -> None:
    choice = choose([CUDA, CPU], HostGpus({"cuda": "/dev/nvidia0"}), requested="cpu")
    assert choice.gpu_layers == 0 and "local_llm_device=cpu" in choice.line


def test_the_runtime_device_list_is_read_by_type() -> None:
    class Kind:
        def __init__(self, name: str) -> None:
            self.name = name
    raw = [{"name": "CUDA0", "description": "RTX", "type": Kind("GGML_BACKEND_DEVICE_TYPE_GPU")},
           {"name": "Vulkan1", "description": "iGPU", "type": Kind("GGML_BACKEND_DEVICE_TYPE_IGPU")},
           {"name": "CPU", "description": "EPYC", "type": Kind("GGML_BACKEND_DEVICE_TYPE_CPU")},
           {"name": "BLAS", "description": "OpenBLAS", "type": Kind("GGML_BACKEND_DEVICE_TYPE_ACCEL")}]
    assert [(d.name, d.backend, d.gpu) for d in build_devices(raw)] == [
        ("CUDA0", "cuda", True), ("Vulkan1", "vulkan", True), ("CPU", "cpu", False), ("BLAS", "blas", False)]
