"""The local LLM child of `appliance up`: llama.cpp's own HTTP server, from the xllamacpp wheel.

``python -m appliance.embedded.llama_server --model F.gguf --alias ID --port P --report R``

xllamacpp is a prebuilt wheel on PyPI (MIT; the CPU build there, CUDA / ROCm / Vulkan builds
of the same package from its project) that links llama.cpp's C++ server (``llama-server``)
into a Python module: `xllamacpp.Server(params)` loads the model and serves the
OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions`` streaming or not,
``/v1/completions``, ``/health``) on its own threads. This module only fills its parameters,
chooses the device (`appliance.embedded.gpu.choose` over the devices the loaded build lists
and what the host shows), writes one JSON report for the parent (which build, which device,
the address) and waits for SIGTERM / SIGINT, or for its parent to go away.

Exit codes: 0 stopped, 2 the runtime is not importable, 3 the model did not load.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from appliance.embedded.gpu import Choice, Device, DeviceChoice, choose, probe_host

log = logging.getLogger("appliance.local_llm")


def build_devices(raw: list[dict[str, Any]]) -> list[Device]:
    """`xllamacpp.get_device_info()` entries as `Device` values (type GPU or IGPU is a GPU)."""
    out = []
    for d in raw:
        kind = str(getattr(d.get("type"), "name", d.get("type", "")))
        out.append(Device(str(d.get("name", "")), str(d.get("description", "")),
                          kind.endswith("_GPU") or kind.endswith("_IGPU")))
    return out


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m appliance.embedded.llama_server")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--alias", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument("--max-answer-tokens", type=int, default=1024,
                   help="the longest answer, also when a request sets no max_tokens (llama.cpp's own default "
                        "is no limit; a larger max_tokens is cut to this)")
    p.add_argument("--threads", type=int, default=0, help="0: llama.cpp decides")
    p.add_argument("--batch", type=int, default=0, help="prompt batch size; 0: llama.cpp's default")
    p.add_argument("--device", choices=["auto", "cpu"], default="auto")
    p.add_argument("--report", type=Path, required=True, help="JSON written once the server listens")
    return p.parse_args(argv)


def params_for(xlc: Any, args: argparse.Namespace, choice: Choice) -> Any:
    params = xlc.CommonParams()
    params.model.path = str(args.model)
    params.model_alias = {args.alias}   # a set of names: a plain str would be read as its letters
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx
    # One slot: an answer without max_tokens would otherwise run until the context is full and
    # hold every request behind it (measured: 103 s on this machine).
    params.n_predict = args.max_answer_tokens
    params.n_gpu_layers = choice.gpu_layers
    params.ui = False                   # the prebuilt wheels carry no web UI; ours is /ui/ on the gateway
    if args.threads:
        params.cpuparams.n_threads = args.threads
        params.cpuparams_batch.n_threads = args.threads
    if args.batch:
        params.n_batch = args.batch
        params.n_ubatch = min(params.n_ubatch, args.batch)
    return params


def _wait_for_stop() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    parent = os.getppid()
    while not stop.wait(1.0):
        if os.getppid() != parent:   # `appliance up` was killed: do not outlive it
            return


def _write(path: Path, report: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report), encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args = parse(argv)
    try:
        import xllamacpp as xlc
    except ImportError as exc:
        log.error("xllamacpp is not importable: %s", exc)
        return 2
    requested: DeviceChoice = "cpu" if args.device == "cpu" else "auto"
    choice = choose(build_devices(list(xlc.get_device_info())), probe_host(), requested)
    version = getattr(xlc, "__version__", "?")
    log.info("xllamacpp %s: %s", version, choice.line)
    report: dict[str, Any] = {"runtime": f"xllamacpp {version}", "build": choice.build,
                              "device": choice.device, "gpu_layers": choice.gpu_layers,
                              "line": choice.line, "base_url": None}
    _write(args.report, report)   # before loading: a load that kills us still leaves the choice
    try:
        server = xlc.Server(params_for(xlc, args, choice))
    except Exception as exc:   # the runtime raises its own RuntimeError/ValueError kinds
        log.error("model %s did not load: %s", args.model, exc)
        return 3
    _write(args.report, {**report, "base_url": f"{server.listening_address}/v1"})
    log.info("serving %s at %s", args.alias, server.listening_address)
    _wait_for_stop()
    del server   # stops llama.cpp's HTTP and inference threads
    return 0


if __name__ == "__main__":
    sys.exit(main())
