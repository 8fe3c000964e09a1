"""Alerts: print what the limits service raised on limits.alerts (``tollway alerts tail``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from tollway.events import topics
from tollway.events.cli_env import from_env, required

if TYPE_CHECKING:
    import argparse
    from collections.abc import Sequence

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from tollway.events.envelope import Envelope, Payload
    from tollway.events.limits import Alert


def register(parser: argparse.ArgumentParser) -> None:
    """Add ``tail``; ``tollway alerts`` alone prints the help."""
    parser.set_defaults(run=lambda _args: _help(parser))
    sub = parser.add_subparsers(dest="alerts_command")
    tail = sub.add_parser(
        "tail",
        help="print alerts from the beginning of limits.alerts (30 days)",
        description="Print alerts, oldest first; with --follow, keep printing new ones.",
    )
    tail.add_argument("-f", "--follow", action="store_true", help="wait for new alerts")
    tail.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="SCOPE[:ID]",
        help="only these scopes, e.g. 'channel' or 'channel:openai-direct' (repeatable)",
    )
    tail.add_argument("--json", action="store_true", help="one JSON envelope per line")
    tail.add_argument(
        "--bootstrap",
        default=from_env("KAFKA_BOOTSTRAP_SERVERS"),
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS)",
    )
    tail.set_defaults(run=run_tail)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_tail(args: argparse.Namespace) -> int:
    """Print matching alerts; exit 0, or 2 with what to do when the broker cannot be reached."""
    import asyncio  # noqa: PLC0415 - not on --help

    from aiokafka.errors import KafkaError  # noqa: PLC0415 - heavy: not on --help

    bootstrap = required(args.bootstrap, "KAFKA_BOOTSTRAP_SERVERS", "--bootstrap")
    try:
        asyncio.run(tail(bootstrap, args.scope, follow=args.follow, as_json=args.json))
    except KafkaError as exc:
        print(  # noqa: T201 - a CLI speaks on stderr
            f"cannot read {topics.ALERTS} from {bootstrap} ({type(exc).__name__}):"
            " is the stack running? Set KAFKA_BOOTSTRAP_SERVERS or pass --bootstrap.",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def matches(alert: Alert, scopes: Sequence[str]) -> bool:
    """True when ``scopes`` is empty or names the alert's scope (``scope`` or ``scope:id``)."""
    return not scopes or any(s in {alert.scope, f"{alert.scope}:{alert.scope_id}"} for s in scopes)


def render(env: Envelope[Payload], as_json: bool) -> str:
    """One line per alert."""
    if as_json:
        from tollway.events.envelope import encode  # noqa: PLC0415 - heavy: not on --help

        # The tail decodes alerts as Envelope[Payload]: encode dumps the payload by its own type.
        return encode(env).decode()
    a: Any = env.payload
    examples = f" e.g. {', '.join(a.example_request_ids)}" if a.example_request_ids else ""
    return (
        f"{env.occurred_at.isoformat()} {a.severity:<8} {a.scope}:{a.scope_id} {a.metric}"
        f" value={a.value:g} threshold={a.threshold:g} window={a.window_seconds}s"
        f" - {a.message}{examples}"
    )


async def tail(bootstrap: str, scopes: Sequence[str], *, follow: bool, as_json: bool) -> None:
    """Read limits.alerts from the beginning; stop at the current end unless ``follow``."""
    from aiokafka import AIOKafkaConsumer  # noqa: PLC0415 - heavy: not on --help
    from aiokafka.errors import UnknownTopicOrPartitionError  # noqa: PLC0415

    from tollway.runtime.kafka import partitions_of  # noqa: PLC0415

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        try:
            tps = await partitions_of(consumer, topics.ALERTS)
        except UnknownTopicOrPartitionError:
            tps = []
        if not tps:
            print(f"no topic {topics.ALERTS} yet: no alert was ever raised.", file=sys.stderr)  # noqa: T201
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        backlog = await _read_until(consumer, ends)
        for env in sorted(backlog, key=lambda e: (e.occurred_at, e.id)):
            _print(env, scopes, as_json)
        if follow:
            print(f"following {topics.ALERTS} on {bootstrap} (Ctrl-C to stop)", file=sys.stderr)  # noqa: T201
        while follow:
            for env in await _poll(consumer):
                _print(env, scopes, as_json)
    finally:
        await consumer.stop()


async def _read_until(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]
) -> list[Envelope[Payload]]:
    out: list[Envelope[Payload]] = []
    while await _behind(consumer, ends):
        out.extend(await _poll(consumer))
    return out


async def _poll(consumer: AIOKafkaConsumer) -> list[Envelope[Payload]]:
    from tollway.events.envelope import decode  # noqa: PLC0415 - heavy: not on --help
    from tollway.events.limits import Alert  # noqa: PLC0415

    batch = await consumer.getmany(timeout_ms=200, max_records=1000)
    out: list[Envelope[Payload]] = []
    for messages in batch.values():
        for message in messages:
            try:
                env = decode(message.value)
            except ValueError:
                continue  # not an alert this build understands
            if isinstance(env.payload, Alert):
                out.append(env)
    return out


def _print(env: Envelope[Payload], scopes: Sequence[str], as_json: bool) -> None:
    from tollway.events.limits import Alert  # noqa: PLC0415 - heavy: not on --help

    if isinstance(env.payload, Alert) and matches(env.payload, scopes):
        print(render(env, as_json), flush=True)  # noqa: T201 - the command's output


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False
