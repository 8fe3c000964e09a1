"""The router remembers recent authorizations so a redelivery is not served twice."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from aiokafka import TopicPartition
from aiokafka.errors import NodeNotReadyError

from tollway.events.envelope import encode, make
from tollway.events.gateway import Candidate, RequestAuthorized, RequestReceived
from tollway.events.pricing import Price
from tollway.router import worker as worker_module
from tollway.router.worker import RecentIds, RouterWorker
from tollway.runtime.outbox import Outgoing

if TYPE_CHECKING:
    import pytest


def test_an_id_is_new_only_once() -> None:
    seen = RecentIds()
    assert seen.first_time("a")
    assert not seen.first_time("a")
    assert seen.first_time("b")


def test_the_oldest_ids_are_forgotten_beyond_the_size() -> None:
    seen = RecentIds(size=2)
    for event_id in ("a", "b", "c"):
        assert seen.first_time(event_id)
    assert seen.first_time("a")
    assert not seen.first_time("c")


# --- publishing after an upstream call survives a broker outage -------------------------------


class _FlakyProducer:
    """Refuses every send while ``down``; remembers what the broker acknowledged."""

    def __init__(self) -> None:
        self.down = True
        self.refused = 0
        self.acked: list[tuple[str, bytes]] = []

    async def send(self, topic: str, *, value: bytes, key: bytes, headers: Any) -> Any:
        del key, headers
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.down:
            self.refused += 1
            future.set_exception(NodeNotReadyError("broker down"))
        else:
            self.acked.append((topic, value))
            future.set_result(None)
        return future


class _ServedRouter:
    """Serves every request at once and returns one usage event (an upstream call was made)."""

    def __init__(self) -> None:
        self.calls = 0

    async def execute(self, env: Any, sink: Any) -> list[Outgoing]:
        del sink
        self.calls += 1
        return [Outgoing("gw.usage", env.payload.request.account_id, b"finished")]


def _authorized_message(offset: int) -> Any:
    candidate = Candidate(
        channel_id="ch",
        channel="ch",
        brand="openai",
        route_type="direct",
        bucket="credit",
        upstream_model="m",
        price=Price(input=1, output=1),
    )
    request = RequestReceived(
        request_id=f"req_{offset}",
        edge_id="e",
        account_id="a",
        key_id="k",
        project_id="p",
        catalog_model="m",
        body={},
        plan=[candidate],
        estimated_input_tokens=1,
        max_output_tokens=1,
        deadline_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    auth = RequestAuthorized(request=request, hold_id="h", bucket="credit", held_micro=1)
    return SimpleNamespace(
        topic="gw.authorized", partition=0, offset=offset, key=b"a", value=encode(make(auth)),
        headers=[],
    )  # fmt: skip


async def _until(predicate: Any) -> None:
    while not predicate():
        await asyncio.sleep(0)


async def test_an_answered_request_is_not_committed_until_its_usage_is_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "RETRY_FIRST_S", 0)
    producer, router = _FlakyProducer(), _ServedRouter()
    worker = RouterWorker(None, producer, router, max_in_flight=4)  # type: ignore[arg-type]
    tp = TopicPartition("gw.authorized", 0)

    worker._start(tp, _authorized_message(7))
    await _until(lambda: producer.refused >= 5)

    # The broker refused the usage event several times: the offset must not move past it.
    assert worker._progress[tp].committable() == 7
    producer.down = False
    await _until(lambda: not worker._tasks)
    assert producer.acked == [("gw.usage", b"finished")]
    assert worker._progress[tp].committable() == 8
    assert router.calls == 1  # published again, never called upstream again


async def test_a_handler_bug_dead_letters_the_authorization_and_moves_on() -> None:
    class _Broken(_ServedRouter):
        async def execute(self, env: Any, sink: Any) -> list[Outgoing]:
            raise RuntimeError("bug")

    producer = _FlakyProducer()
    producer.down = False
    worker = RouterWorker(None, producer, _Broken(), max_in_flight=1)  # type: ignore[arg-type]
    tp = TopicPartition("gw.authorized", 0)

    worker._start(tp, _authorized_message(3))
    await _until(lambda: not worker._tasks)

    assert [topic for topic, _ in producer.acked] == ["gw.authorized.dlq"]
    assert worker._progress[tp].committable() == 4


# --- the committer follows finished messages and sleeps while none finish ---------------------


class _CommitLog:
    """Records every commit the worker asks the consumer for."""

    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append({tp: om.offset for tp, om in offsets.items()})


async def test_a_finished_message_is_committed_and_an_idle_worker_commits_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "COMMIT_EVERY_S", 0)
    consumer, producer = _CommitLog(), _FlakyProducer()
    producer.down = False
    worker = RouterWorker(consumer, producer, _ServedRouter(), max_in_flight=4)  # type: ignore[arg-type]
    committer = asyncio.create_task(worker._commit_loop())
    tp = TopicPartition("gw.authorized", 0)
    try:
        worker._start(tp, _authorized_message(5))
        await _until(lambda: consumer.commits)
        for _ in range(100):  # nothing finishes: the committer must not run again
            await asyncio.sleep(0)
        assert consumer.commits == [{tp: 6}]
        assert not worker._progressed.is_set()
    finally:
        committer.cancel()
