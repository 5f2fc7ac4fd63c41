"""The fake LLM server in a process of its own, for runs that are killed: it outlives them and keeps
counting (what each prompt was answered, what was paid twice), read over HTTP.

    with LLMProcess(latency_ms=20) as llm:   # python tests/support/llm_process.py --port 0 --latency-ms 20
        llm.url; llm.stats()["repeated_answers"]; llm.reset()

Its `/stats` adds to FakeLLMServer's: `in_flight` (requests arrived and not yet answered), `max_in_flight`,
`answered` (usable answers sent, each one billed) and `now` (the server's time.monotonic(), the clock of
`last_arrival`). POST `/reset` zeroes every count."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

if __package__ in (None, ""):  # run as a script: `support` and `orthoselect` importable from the checkout
    sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]

from support.fake_llm_server import FakeLLMServer


class CountingLLMServer(FakeLLMServer):
    """FakeLLMServer whose /stats also tells what is in flight, and which POST /reset zeroes."""

    def stats(self) -> dict:
        return {
            **super().stats(),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "answered": sum(self.answered.values()),
            "last_arrival": self.arrivals[-1] if self.arrivals else None,
            "now": time.monotonic(),
        }

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset_counts()
        return web.json_response({"reset": True})

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_post("/reset", self._reset)
        return app


class LLMProcess:
    """A CountingLLMServer in a child process: `url` (ending in /v1), `stats()`, `reset()`."""

    def __init__(self, latency_ms: float = 20.0, seed: int = 0, port: int = 0) -> None:
        self.args = ["--port", str(port), "--latency-ms", str(latency_ms), "--seed", str(seed)]
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> str:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *self.args], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None  # stdout=PIPE
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http"):
            self.stop()
            raise RuntimeError(f"the LLM server process did not start (printed {line!r})")
        self.url = line
        return self.url

    @property
    def base(self) -> str:
        return self.url.removesuffix("/v1")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.base}/stats", timeout=10) as r:
            stats: dict[str, Any] = json.loads(r.read())
            return stats

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.base}/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> LLMProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    srv = CountingLLMServer(latency_ms=a.latency_ms, seed=a.seed, port=a.port)

    async def serve() -> None:
        await srv._start()
        print(srv.url, flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
