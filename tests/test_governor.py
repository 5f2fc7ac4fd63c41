"""The run-wide governor: requests and tokens per minute, requests in flight and the budget, shared by
every client; leases are batched; spend is persisted per attempt."""

import asyncio
import pickle
import time

import pytest

from orthoselect.data.storage import Storage
from orthoselect.llm.governor import Governor, Permits, spent_so_far
from orthoselect.llm.limits import BudgetExhausted


def drive(
    governor: Governor, clients: int, per_client: int, tokens: int = 100, cost: float = 0.0, hold: float = 0.0
) -> tuple[float, int]:
    """Run `clients` concurrent clients each sending `per_client` requests; (seconds, max in flight)."""
    in_flight = peak = 0

    async def client(permits: Permits) -> None:
        nonlocal in_flight, peak
        for _ in range(per_client):
            await permits.acquire(tokens, cost)
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(hold)
            in_flight -= 1
            permits.release(tokens, cost)
        await permits.aclose()

    async def main() -> float:
        start = time.monotonic()
        await asyncio.gather(*(client(Permits(governor)) for _ in range(clients)))
        return time.monotonic() - start

    return asyncio.run(main()), peak


def test_requests_per_minute_hold_across_clients():
    seconds, _ = drive(Governor(rpm=1200), clients=4, per_client=25)  # 100 requests at 20/s
    # one second of burst (20) is allowed up front, the other 80 come at 20/s
    assert 3.6 <= seconds <= 4.8


def test_tokens_per_minute():
    seconds, _ = drive(Governor(tpm=60_000), clients=2, per_client=10, tokens=250)  # 1000 tokens/s
    assert 3.6 <= seconds <= 4.8  # 5000 tokens: 1000 of burst, then 4 s


def test_in_flight_cap_is_global():
    governor = Governor(max_in_flight=3)
    _, peak = drive(governor, clients=4, per_client=6, hold=0.02)
    assert peak <= 3 and governor.in_flight == 0


def test_budget_stops_sending_exactly_and_persists(tmp_path):
    storage = Storage(str(tmp_path))
    governor = Governor(budget_usd=1.0, spent_usd=0.25, storage=storage, attempt="a2")
    permits = Permits(governor, batch=4)
    sent = 0

    async def spend() -> None:
        nonlocal sent
        while True:
            await permits.acquire(10, 0.05)
            sent += 1
            permits.release(10, 0.05)

    with pytest.raises(BudgetExhausted):
        asyncio.run(spend())
    assert sent == 15  # 0.25 already spent + 15 x 0.05 = 1.00
    governor.flush()
    assert storage.read_json("spend/a2.json")["spent_usd"] == pytest.approx(0.75)
    storage.write_json("spend/a1.json", {"spent_usd": 0.25})
    assert spent_so_far(storage) == pytest.approx(1.0)


def test_unused_permits_are_returned():
    governor = Governor(max_in_flight=10)
    permits = Permits(governor, batch=8)

    async def one() -> None:
        await permits.acquire(10, 0.0)
        permits.release(10, 0.0)
        assert governor.in_flight == 8  # leased as a batch
        await permits.aclose()

    asyncio.run(one())
    assert governor.in_flight == 0


def test_permits_pickle_without_state():
    permits = Permits(Governor(rpm=60), batch=3)
    clone = pickle.loads(pickle.dumps(permits))
    assert clone.batch == 3 and clone._credits == 0


def test_a_budget_needs_known_prices(tmp_path):
    from orthoselect.config import ConfigError, load_config
    from orthoselect.llm.governor import check_budget_prices, governor_args

    base = {"dataset": {"path": "x"}, "budget_usd": 5.0}
    unknown = load_config({**base, "rating": {"model": "hosted_vllm/my-own-model"}})
    with pytest.raises(ConfigError, match=r"rating\.price_per_million_tokens"):
        governor_args(unknown, Storage(str(tmp_path)), "a1")
    priced = {"model": "hosted_vllm/my-own-model", "price_per_million_tokens": {"input": 0, "output": 0}}
    check_budget_prices(load_config({**base, "rating": priced, "rules": {"file": "rules.txt"}}))
    check_budget_prices(load_config({**base, "rating": {"model": "openai/gpt-4o-mini"}}))  # in litellm's map
    check_budget_prices(load_config({"dataset": {"path": "x"}, "rating": {"model": "hosted_vllm/my-own-model"}}))
