"""``make dev``: the whole system on embedded defaults, a seeded demo tenant, and how to call it.

Ctrl-C stops everything cleanly; running it again starts from a fresh state.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from tollway.devstack.seed import create_tenant, seed_routes
from tollway.devstack.stack import SERVICES, Stack, StackConfig


def _port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def write_env(path: Path, values: dict[str, str]) -> None:
    """Write ``KEY=value`` lines (git-ignored file; holds the demo secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    path.chmod(0o600)


def banner(stack: Stack, api_key: str, env_file: Path, seconds: float) -> str:
    """What to paste to make the first call, and where the dashboard is."""
    base = f"{stack.edge_url}/v1"
    metrics = "".join(
        f"\n  {name:<11} {stack.metrics_url(name)}" for name in stack.config.metrics_ports
    )
    return f"""
Tollway is running ({seconds:.1f}s). Settings are in {env_file}.

  Dashboard: {stack.edge_url}/ui/  (sign in with the API key below)
  Operators: {stack.edge_url}/ui/admin/login  (with the admin token {stack.config.admin_token})

  curl {base}/chat/completions \\
    -H "Authorization: Bearer {api_key}" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello!"}}]}}' -i

  # the receipt of that call (use the x-request-id header it returned) and your balance:
  curl {base}/receipts/<x-request-id> -H "Authorization: Bearer {api_key}"
  curl {base}/balance -H "Authorization: Bearer {api_key}"

  # with the official OpenAI SDK:
  from openai import OpenAI
  client = OpenAI(base_url="{base}", api_key="{api_key}")
  reply = client.chat.completions.with_raw_response.create(
      model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello!"}}])
  print(reply.headers["x-request-id"], reply.parse().choices[0].message.content)

The `tollway` command (ledger, alerts, budgets, research) reads {env_file}:
  set -a; . {env_file}; set +a       # load the settings into your shell
  uv run tollway --help               # or put it on PATH: export PATH="$PWD/.venv/bin:$PATH"

Prometheus metrics (ports also in dev.env):{metrics}
Demo upstream (fault injection, see README): {stack.upstream_url}/_control/faults

Logs: {stack.log_dir}/   Press Ctrl-C to stop.
"""


class _StopOnSignal:
    """SIGINT/SIGTERM handler: the first one interrupts start-up or the wait, later ones do nothing.

    A terminal, ``timeout`` or a supervisor signals the whole process group, often more than once
    (``uv run`` forwards a second copy). Raising again while the stack is being stopped would
    abandon it half-stopped, with its processes and ports left behind; so only the first raises.
    """

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, *_: object) -> None:
        if self.requested:
            return
        self.requested = True
        raise KeyboardInterrupt

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)


def _previous_env(root: Path) -> dict[str, str]:
    path = root / "dev.env"
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def _external(name: str, previous: dict[str, str]) -> str | None:
    """``$name`` when it names a server of the user's; not when it is our last run's dev.env.

    A shell that loaded dev.env still holds the embedded stack's DATABASE_URL: that stack is
    gone, and this run starts its own again.
    """
    value = os.environ.get(name) or None
    return None if value == previous.get(name) else value


def _config(root: Path) -> StackConfig:
    metrics_base = _port("TOLLWAY_DEV_METRICS_PORT", 9470)
    previous = _previous_env(root)
    return StackConfig(
        root=root,
        database_url=_external("DATABASE_URL", previous),
        kafka_bootstrap=_external("KAFKA_BOOTSTRAP_SERVERS", previous),
        pg_port=_port("TOLLWAY_DEV_PG_PORT", 54329),
        broker_port=_port("TOLLWAY_DEV_BROKER_PORT", 19092),
        edge_port=_port("TOLLWAY_DEV_EDGE_PORT", 8787),
        upstream_port=_port("TOLLWAY_DEV_UPSTREAM_PORT", 8900),
        researcher_port=_port("TOLLWAY_DEV_RESEARCHER_PORT", 8790),
        admin_token=os.environ.get("TOLLWAY_ADMIN_TOKEN", "tw-admin-dev"),
        # Apache Kafka keeps its log on disk: a broker crash loses nothing (Tansu, in memory,
        # would lose every topic), and its fetches wake on new records instead of polling.
        broker=os.environ.get("TOLLWAY_BROKER", "kafka"),
        # Every service serves Prometheus metrics on its own port: base, base+1, ...
        metrics_ports={name: metrics_base + i for i, name in enumerate(SERVICES)},
    )


def dev_env(stack: Stack, api_key: str) -> dict[str, str]:
    """Everything the CLIs and clients need to reach this stack (nothing else has a default)."""
    cfg = stack.config
    values = {
        "TOLLWAY_BASE_URL": f"{stack.edge_url}/v1",
        "TOLLWAY_EDGE_URL": stack.edge_url,
        "TOLLWAY_API_KEY": api_key,
        "TOLLWAY_ADMIN_TOKEN": cfg.admin_token,
        "TOLLWAY_DEMO_UPSTREAM_URL": stack.upstream_url,
        "TOLLWAY_RESEARCHER_URL": f"http://127.0.0.1:{cfg.researcher_port}",
        "DATABASE_URL": stack.dsn,
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        # The key the channel secrets are sealed with (`tollway secrets …` needs it).
        "TOLLWAY_SECRET_KEYS": cfg.secret_keys,
    }
    if stack.pg_password:
        values["TOLLWAY_DEV_PG_PASSWORD"] = stack.pg_password
    values.update(stack.broker_env())
    for name, port in cfg.metrics_ports.items():
        values[f"TOLLWAY_{name.upper()}_METRICS_PORT"] = str(port)
    return values


def main(argv: list[str] | None = None) -> int:
    """Run the stack until interrupted."""
    parser = argparse.ArgumentParser(prog="tollway-dev", description=__doc__)
    parser.add_argument("--root", default=".tollway", help="state and logs directory")
    parser.add_argument("--no-wait", action="store_true", help="start, print, stop (smoke)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    root = Path(args.root).resolve()
    config = _config(root)
    stack = Stack(config)
    stopper = _StopOnSignal()
    stopper.install()
    try:
        print("Starting Tollway (embedded stack):", file=sys.stderr)  # noqa: T201
        stack.start_infra()
        stack.start_upstream()
        asyncio.run(seed_routes(stack.dsn, stack.upstream_url, stack.secret_ring))
        stack.start_services()
        tenant = create_tenant(
            stack.edge_url, config.admin_token, "demo", {"credit": "100", "wallet": "500"}
        )
        env_file = root / "dev.env"
        write_env(env_file, dev_env(stack, tenant.api_key))
        print(banner(stack, tenant.api_key, env_file, time.monotonic() - started), flush=True)  # noqa: T201
        if not args.no_wait:
            stack.supervise()
    except KeyboardInterrupt:
        pass
    finally:
        # From here on a signal is a no-op (the handler raises only once): stop everything.
        stopper.requested = True
        print("\nStopping…", file=sys.stderr, flush=True)  # noqa: T201
        stack.stop()
        print("Stopped.", file=sys.stderr, flush=True)  # noqa: T201
    return 0
