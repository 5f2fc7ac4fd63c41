"""Dollar cost of requests: prices from the config, else litellm's bundled (offline) cost map. A model
whose price is not known costs `None` (reported as unknown), never zero."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import orthoselect.env  # noqa: F401 - offline cost map before litellm loads
from orthoselect.config import SIMULATED, Prices as PriceConfig


@dataclass(frozen=True)
class Prices:
    """Dollars per token; None when unknown."""

    model: str
    input_per_token: float | None
    output_per_token: float | None
    source: str  # "config", "litellm", "simulated" or "unknown"

    @property
    def known(self) -> bool:
        return self.input_per_token is not None and self.output_per_token is not None

    def cost(self, tokens_in: int, tokens_out: int) -> float | None:
        if not self.known:
            return None
        return tokens_in * self.input_per_token + tokens_out * self.output_per_token


@functools.lru_cache(maxsize=64)
def _litellm_prices(model: str) -> tuple[float, float] | None:
    import litellm

    names = [model, model.split("/", 1)[-1]]
    for name in names:
        info = litellm.model_cost.get(name)
        if info and info.get("input_cost_per_token") is not None and info.get("output_cost_per_token") is not None:
            return float(info["input_cost_per_token"]), float(info["output_cost_per_token"])
    try:
        info = litellm.get_model_info(model)
    except Exception:  # noqa: BLE001 - litellm raises for models it does not know
        return None
    if info.get("input_cost_per_token") is None or info.get("output_cost_per_token") is None:
        return None
    return float(info["input_cost_per_token"]), float(info["output_cost_per_token"])


def prices_for(model: str, override: PriceConfig | dict | None = None) -> Prices:
    """Prices of `model`: the config's `price_per_million_tokens`, else litellm's map, else unknown."""
    if model == SIMULATED:
        return Prices(model, 0.0, 0.0, "simulated")
    if override is not None:
        o = override if isinstance(override, PriceConfig) else PriceConfig(**override)
        return Prices(model, o.input / 1e6, o.output / 1e6, "config")
    found = _litellm_prices(model)
    if found is None:
        return Prices(model, None, None, "unknown")
    return Prices(model, found[0], found[1], "litellm")
