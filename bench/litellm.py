"""LiteLLM's proxy as a comparison point: installed beside the project, never into it.

It runs without a database, pointed at the same demo upstream as Tollway, so both gateways
are measured against the same baseline in the same run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from bench.harness import progress

if TYPE_CHECKING:
    from collections.abc import Iterator

SPEC = "litellm[proxy]>=1.108"
# The package registry this project installs from lags PyPI by a few days: LiteLLM >= 1.108
# pins a certifi released after the newest one available. The CA bundle plays no part in a
# loopback benchmark, so the newest available certifi is substituted.
OVERRIDES = ("certifi==2026.10.18",)
MASTER_KEY = "sk-bench-litellm"
# The running proxies' process ids, for the benchmarks' CPU meters.
PIDS: dict[str, int] = {}
VENV = Path(__file__).resolve().parent.parent / ".tollway" / "bench" / "litellm-venv"


def _uv() -> str:
    found = shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")
    if not Path(found).exists():
        raise RuntimeError("uv not found: run `make deps` first")
    return found


def ensure_installed() -> Path:
    """The ``litellm`` executable, installing it into its own virtualenv on first use."""
    exe = VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    progress(f"installing {SPEC} into {VENV.relative_to(VENV.parents[2])} (once; a few minutes)")
    overrides = VENV.parent / "litellm-overrides.txt"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    overrides.write_text("\n".join(OVERRIDES) + "\n")
    subprocess.run([_uv(), "venv", "-q", "-p", sys.executable, str(VENV)], check=True)
    subprocess.run(
        [_uv(), "pip", "install", "-q", SPEC, "--override", str(overrides)],
        check=True,
        env={**os.environ, "VIRTUAL_ENV": str(VENV)},
    )
    return exe


def _config(upstream_url: str, database_url: str | None) -> str:
    database = f"  database_url: {database_url}\n" if database_url else ""
    return f"""model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini-2024-07-18
      api_base: {upstream_url}/openai-direct/v1
      api_key: sk-demo-openai-direct
general_settings:
  master_key: {MASTER_KEY}
{database}litellm_settings:
  telemetry: false
"""


@contextlib.contextmanager
def proxy(
    upstream_url: str,
    port: int,
    workdir: Path,
    database_url: str | None = None,
    start_timeout: float = 600,
) -> Iterator[str]:
    """Run LiteLLM's proxy (one worker; with ``database_url``, its keys and budgets) and yield
    its base URL."""
    exe = ensure_installed()
    name = "litellm-db" if database_url else "litellm"
    config = workdir / f"{name}.yaml"
    config.write_text(_config(upstream_url, database_url))
    log_path = workdir / f"{name}.log"
    log = log_path.open("wb")
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network at run time
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        **({"DATABASE_URL": database_url} if database_url else {}),
    }
    proc = subprocess.Popen(
        [str(exe), "--config", str(config), "--port", str(port), "--num_workers", "1"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url, proc, log_path, start_timeout)
        PIDS[name] = proc.pid
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        PIDS.pop(name, None)
        log.close()


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 600) -> None:
    progress("waiting for LiteLLM's proxy to start (its import alone takes a while)")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"LiteLLM exited with {proc.returncode}; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health/liveliness", timeout=2).status_code == 200:
                return
        time.sleep(1)
    raise RuntimeError(f"LiteLLM did not start within {timeout}s; see {log}")


def budget_key(url: str, max_budget: float = 1_000_000.0) -> str:
    """A virtual key with a budget on a proxy that has a database (LiteLLM then checks and
    spends it on every request, like Tollway's hold and settlement)."""
    response = httpx.post(
        f"{url}/key/generate",
        headers={"authorization": f"Bearer {MASTER_KEY}"},
        json={"max_budget": max_budget, "models": ["gpt-4o-mini"]},
        timeout=60,
    )
    response.raise_for_status()
    key: str = response.json()["key"]
    return key
