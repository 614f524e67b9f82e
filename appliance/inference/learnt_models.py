"""A semantic router's fitted classifiers kept between starts (`prompt_classifier.LearntModels`):
one JSON file per key under a directory of the state dir.

Why: a router that teaches itself from the 924 shipped prompts embeds them and fits, ~4 s in
each worker: a gateway listened after 10-11 s instead of 4-6 (docs/routing.md), and after 4-6 s
again with the model kept. The key names the cards' vectors, the prompts and the trainer's
recipe, so a kept model is only reused for the same inputs. A file that cannot be read is
ignored (the model is fitted again); one that cannot be written costs the next start the fit,
nothing else.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from appliance.domain.prompt_classifier import LinearModel

log = logging.getLogger(__name__)


class LearntModelFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError("a learnt model's key is letters and digits")
        return self.directory / f"{key}.json"

    async def get(self, key: str) -> LinearModel | None:
        path = self._path(key)
        try:
            data = json.loads(path.read_bytes())
            return LinearModel(tuple(str(c) for c in data["classes"]),
                               tuple(tuple(float(x) for x in row) for row in data["weights"]),
                               tuple(float(b) for b in data["biases"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("a kept router model could not be read; fitting it again",
                        extra={"path": str(path), "error": type(exc).__name__})
            return None

    async def put(self, key: str, model: LinearModel) -> None:
        path = self._path(key)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"classes": model.classes, "weights": model.weights,
                                           "biases": model.biases}), encoding="utf-8")
            partial.replace(path)
        except OSError as exc:
            log.warning("a router model could not be kept; the next start fits it again",
                        extra={"path": str(path), "error": type(exc).__name__})
            partial.unlink(missing_ok=True)
