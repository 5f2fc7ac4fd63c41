"""Dollar cost of requests: prices from the config, else litellm's bundled (offline) cost map, read as
the JSON file it ships (importing litellm for it would cost seconds and ~400k objects per worker). A
model whose price is not known costs `None` (reported as unknown), never zero."""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from orthoselect.config import SIMULATED
from orthoselect.config import Prices as PriceConfig


@dataclass(frozen=True)
class Prices:
    """Dollars per token; None when unknown."""

    model: str
    input_per_token: float | None
    output_per_token: float | None
    source: str  # "config", "litellm", "simulated" or "unknown"
    cached_input_per_token: float | None = None  # input read from the provider's prompt cache; None: input's

    @property
    def known(self) -> bool:
        return self.input_per_token is not None and self.output_per_token is not None

    @property
    def cached_rate(self) -> float | None:
        """Dollars per cached input token: the cached price where one is known, else the input price."""
        return self.input_per_token if self.cached_input_per_token is None else self.cached_input_per_token

    def cost(self, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float | None:
        """Dollars for a request: `tokens_cached` of its `tokens_in` at the cached rate."""
        if self.input_per_token is None or self.output_per_token is None:
            return None
        cached = min(tokens_cached, tokens_in)
        fresh = (tokens_in - cached) * self.input_per_token
        return fresh + cached * (self.cached_rate or 0.0) + tokens_out * self.output_per_token


@functools.lru_cache(maxsize=1)
def _cost_map() -> dict:
    spec = importlib.util.find_spec("litellm")
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json" if spec and spec.origin else None
    return json.loads(path.read_text()) if path and path.exists() else {}


@functools.lru_cache(maxsize=64)
def _litellm_prices(model: str) -> tuple[float, float, float | None] | None:
    """(input, output, cached input or None) dollars per token: the model string as given, then without
    its provider prefix when the map's entry is for that provider (openai/gpt-4o-mini -> gpt-4o-mini)."""
    cost_map = _cost_map()
    provider, _, bare = model.partition("/")
    for name, same_provider in ((model, True), (bare, False)):
        info = cost_map.get(name) if name else None
        if not info or (not same_provider and info.get("litellm_provider") not in (provider, None)):
            continue
        if info.get("input_cost_per_token") is not None and info.get("output_cost_per_token") is not None:
            cached = info.get("cache_read_input_token_cost")
            return (
                float(info["input_cost_per_token"]),
                float(info["output_cost_per_token"]),
                None if cached is None else float(cached),
            )
    return None


def prices_for(model: str, override: PriceConfig | dict | None = None) -> Prices:
    """Prices of `model`: the config's `price_per_million_tokens`, else litellm's map, else unknown."""
    if model == SIMULATED:
        return Prices(model, 0.0, 0.0, "simulated")
    if override is not None:
        o = override if isinstance(override, PriceConfig) else PriceConfig(**override)
        cached = None if o.cached_input is None else o.cached_input / 1e6
        return Prices(model, o.input / 1e6, o.output / 1e6, "config", cached)
    found = _litellm_prices(model)
    if found is None:
        return Prices(model, None, None, "unknown")
    return Prices(model, found[0], found[1], "litellm", found[2])
