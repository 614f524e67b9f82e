"""The output parser chain's policy for one worker (domain/parsers/policy.py), from settings:
each backend's default stages by its kind, the per-model `parsers` lists, and the image
fetcher for the vision stage."""

from __future__ import annotations

from appliance.backends.capabilities import capabilities_of
from appliance.backends.image_fetch import HttpImageFetcher
from appliance.config import Settings
from appliance.domain.parsers.policy import Parsers, VisionLimits
from appliance.domain.parsers.stages import Count, ParserSettings, default_stages
from appliance.feature import Feature


def build_parsers(settings: Settings, count: Count) -> tuple[Parsers, Feature]:
    cfg = settings.parsers
    backends = settings.catalog.backends
    fetcher = HttpImageFetcher(max_bytes=cfg.image_max_bytes, timeout_s=cfg.image_timeout_s,
                               max_redirects=cfg.image_max_redirects, allow_networks=cfg.image_allow_networks)
    parsers = Parsers({b.name: default_stages(b.kind) for b in backends},
                      cannot_fetch=frozenset(b.name for b in backends if not capabilities_of(b).fetches_image_urls),
                      settings=ParserSettings(cfg.max_buffer_chars, cfg.schema_retries), count=count,
                      fetcher=fetcher, vision=VisionLimits(cfg.image_max_count))
    return parsers, fetcher.feature()
