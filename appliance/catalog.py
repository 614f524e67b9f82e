"""The TOML catalog: backends, routes, models, routers, API keys and the guard model, each
validated at start (`appliance.config.load_settings` reads the file; a wrong value becomes a
`ConfigError` naming the field, e.g. ``routes[1].backend: unknown backend 'gpu'``)."""

from __future__ import annotations

import fnmatch
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

BackendKind = Literal["vllm", "llamacpp", "lmstudio", "ollama", "openai"]


class Strict(BaseModel):
    """Every config record: unknown fields refused, frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CapabilitiesConfig(Strict):
    """Overrides of what a backend's kind implies (appliance/backends/capabilities.py)."""

    extension_fields: tuple[str, ...] | None = None
    fetches_image_urls: bool | None = None
    completions: bool | None = None
    tokenize: bool | None = None
    # how the backend is told to think or not (appliance/domain/thinking.py)
    thinking: Literal["chat_template_kwargs", "reasoning_effort", "reasoning_effort_on", "none"] | None = None


class BackendConfig(Strict):
    name: Annotated[str, Field(min_length=1)]
    kind: BackendKind
    base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")]
    api_key_env: str | None = None
    api_key_credential: str | None = None
    timeout_s: Annotated[float | None, Field(gt=0)] = None
    headers: dict[str, str] = Field(default_factory=dict)
    discover: bool = True
    capabilities: CapabilitiesConfig = CapabilitiesConfig()
    gpu_hour_usd: Annotated[float | None, Field(ge=0)] = None   # an hour of its time: unpriced models' cost (budgets, usage)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")


class RouteConfig(Strict):
    pattern: Annotated[str, Field(min_length=1)]
    backend: str


class ModelConfig(Strict):
    id: Annotated[str, Field(min_length=1)]
    backend: str | tuple[str, ...]          # one backend, or replicas balanced by outstanding requests
    upstream_id: str | None = None
    owned_by: str | None = None
    context_length: Annotated[int | None, Field(gt=0)] = None
    description: str = ""                   # the model card a router compares prompts with
    examples: tuple[str, ...] = ()          # a few prompts this model is for (the card's examples)
    tags: tuple[str, ...] = ()
    price_input_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    price_output_per_mtok: Annotated[float, Field(ge=0)] = 0.0
    fallbacks: tuple[str, ...] = ()         # catalog models tried in order when this one fails before the first byte
    # the output parser chain's stages for this model (docs/parsers.md); unset: all four for a
    # local backend kind, none for a cloud API; [] turns the chain off
    parsers: tuple[Literal["tool_calls", "reasoning", "vision", "output_format"], ...] | None = None
    moderate: Literal["input"] | None = None  # screen every request's input with [moderations] model first

    @field_validator("backend")
    @classmethod
    def _some_backend(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        if isinstance(value, tuple) and not value:
            raise ValueError("at least one backend")
        return value

    @property
    def backends(self) -> tuple[str, ...]:
        return (self.backend,) if isinstance(self.backend, str) else self.backend


Margin = Annotated[float, Field(ge=0, le=1)]


class LabelledPrompt(Strict):
    """A prompt a router learns from: the candidate it should go to (docs/routing.md)."""

    prompt: Annotated[str, Field(min_length=1)]
    model: Annotated[str, Field(min_length=1)]


class RouterWeights(Strict):
    quality: Annotated[float, Field(ge=0)] = 1.0
    latency: Annotated[float, Field(ge=0)] = 0.0
    cost: Annotated[float, Field(ge=0)] = 0.0


class RouterConfig(Strict):
    """A virtual model: the prompt picks one of `candidates` by their model cards."""

    id: Annotated[str, Field(min_length=1)]
    candidates: Annotated[tuple[str, ...], Field(min_length=1)]
    default: str                            # the fail-open choice
    weights: RouterWeights | None = None
    max_cost_per_mtok: Annotated[float | None, Field(ge=0)] = None
    budget_ms: Annotated[float, Field(gt=0)] = 50.0   # past this the default is used
    # how far another card must beat the default's similarity (the default is the everyday model):
    # one number, or one per half of the encoder's vector [sentence (USE), tokens (e5)], weighted
    # by the prompt's share of each; [0.08, 0.0] chosen on 474 seen prompts (docs/routing.md)
    margin: Margin | tuple[Margin, Margin] = (0.08, 0.0)
    # "nearest": per encoder, a card's two texts most like the prompt (USE) or its centroid
    # (e5 tokens); "centroid": the card's centroid over the whole vector
    scoring: Literal["nearest", "centroid"] = "nearest"
    # labelled prompts to learn from (a classifier over the encoder's vectors instead of the
    # cards): a JSON Lines file of {"prompt", "model"}, relative to the catalog, or
    # "builtin:roles" (924 prompts labelled coding / reasoning / general, shipped); its lines
    # land in `training_examples`, which may also be written inline. `training_models` maps
    # the file's labels to this router's candidates, e.g. { coding = "coder" }
    training: str | None = None
    training_models: dict[str, str] = {}
    training_examples: tuple[LabelledPrompt, ...] = ()
    # prompts without labels to teach itself from (instead of `training`): the cards label each
    # as they would route it, and a classifier learns from the cards' texts and those prompts:
    # 86% -> 95.3% right on two blind sets (docs/routing.md). A JSON Lines file of {"prompt"} (a
    # "model" in it is ignored), relative to the catalog, or "builtin:roles" (its 924 prompts,
    # labels dropped); its lines land in `unlabelled_prompts`, which may also be written inline
    unlabelled: str | None = None
    unlabelled_prompts: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    moderate: Literal["input"] | None = None  # screen every request's input with [moderations] model first


class ModerationsConfig(Strict):
    """`[moderations]`: the guard model behind /v1/moderations and `moderate = "input"` (docs/responses.md)."""

    model: Annotated[str, Field(min_length=1)]   # a catalog model id
    format: Literal["llama-guard-3", "shieldgemma"] = "llama-guard-3"
    max_inputs: Annotated[int, Field(ge=1, le=1024)] = 32   # inputs one /v1/moderations request may carry


class ApiKeyConfig(Strict):
    """A static key (the store's keys: `appliance keys`, docs/access.md); the same limits apply."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    models: tuple[str, ...] = ()            # glob patterns; empty: any model
    workspaces: tuple[str, ...] = ()        # empty: any workspace
    rpm: Annotated[int | None, Field(gt=0)] = None
    tpm: Annotated[int | None, Field(gt=0)] = None
    budget_usd: Annotated[float | None, Field(gt=0)] = None
    period: Literal["day", "month"] = "month"
    admin: bool = False

    @field_validator("sha256")
    @classmethod
    def _not_weak(cls, value: str) -> str:
        from appliance.domain.keys import WEAK_DIGESTS

        if value in WEAK_DIGESTS:
            raise ValueError("the hash of a well-known example key (sk-1234, changeme, ...): make one with "
                             "`appliance keys create NAME`")
        return value


class Catalog(Strict):
    """The TOML catalog: `[[backends]]`, `[[routes]]`, `[[models]]`, `[[api_keys]]`."""

    backends: tuple[BackendConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    models: tuple[ModelConfig, ...] = ()
    routers: tuple[RouterConfig, ...] = ()
    api_keys: tuple[ApiKeyConfig, ...] = ()
    moderations: ModerationsConfig | None = None

    @model_validator(mode="after")
    def _references(self) -> Catalog:
        names = [b.name for b in self.backends]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise FieldError(f"backends[{i}].name", f"duplicate backend {name!r}")
        for i, route in enumerate(self.routes):
            if route.backend not in names:
                raise FieldError(f"routes[{i}].backend", f"unknown backend {route.backend!r}")
        seen: set[str] = set()
        for i, model in enumerate(self.models):
            for backend in model.backends:
                if backend not in names:
                    raise FieldError(f"models[{i}].backend", f"unknown backend {backend!r}")
            if model.id in seen:
                raise FieldError(f"models[{i}].id", f"duplicate model {model.id!r}")
            seen.add(model.id)
        for i, model in enumerate(self.models):
            for fallback in model.fallbacks:
                if fallback not in seen or fallback == model.id:
                    raise FieldError(f"models[{i}].fallbacks", f"not another catalog model: {fallback!r}")
        for i, router in enumerate(self.routers):
            if router.id in seen:
                raise FieldError(f"routers[{i}].id", f"{router.id!r} is a model id too")
            for candidate in router.candidates:
                if candidate not in seen:
                    raise FieldError(f"routers[{i}].candidates", f"unknown model {candidate!r}")
            if router.default not in router.candidates:
                raise FieldError(f"routers[{i}].default", f"{router.default!r} is not one of the candidates")
            for k, example in enumerate(router.training_examples):
                if example.model not in router.candidates:
                    raise FieldError(f"routers[{i}].training_examples[{k}].model",
                                     f"{example.model!r} is not one of the candidates")
            if router.training_examples and router.unlabelled_prompts:
                raise FieldError(f"routers[{i}].unlabelled", "a router learns from training or from unlabelled "
                                 "prompts, not both")
            if router.training_examples and {e.model for e in router.training_examples} != set(router.candidates):
                missing = sorted(set(router.candidates) - {e.model for e in router.training_examples})
                raise FieldError(f"routers[{i}].training_examples", f"no example for {', '.join(missing)}")
            seen.add(router.id)
        self._check_moderation()
        return self

    def _check_moderation(self) -> None:
        guard = self.moderations.model if self.moderations is not None else None
        if guard is not None and guard not in {m.id for m in self.models}:
            raise FieldError("moderations.model", f"not a catalog model: {guard!r}")
        items: list[tuple[str, str, str | None]] = [(f"models[{i}]", m.id, m.moderate) for i, m in enumerate(self.models)]
        items += [(f"routers[{i}]", r.id, r.moderate) for i, r in enumerate(self.routers)]
        for loc, name, moderate in items:
            if moderate is not None and guard is None:
                raise FieldError(f"{loc}.moderate", "needs a guard model: set [moderations] model")
            if moderate is not None and name == guard:
                raise FieldError(f"{loc}.moderate", "the guard model cannot screen itself")

    def backend(self, name: str) -> BackendConfig:
        return next(b for b in self.backends if b.name == name)

    def route_for(self, model: str) -> RouteConfig | None:
        return next((r for r in self.routes if fnmatch.fnmatchcase(model, r.pattern)), None)


class FieldError(ValueError):
    def __init__(self, loc: str, msg: str) -> None:
        super().__init__(f"{loc}: {msg}")
