"""Events from a Redis stream: stored then acknowledged, bad entries set aside with the reason,
redelivery (a consumer that died, a lost acknowledgement) made exactly-once."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from equilibra.service.engine import Engine
from equilibra.service.settings import load_settings
from equilibra.service.stream import EventStream

T0 = 1_767_000_000.0


@pytest.fixture
def engine(tmp_path: Path):
    settings = load_settings(
        None, environ={}, db=f"sqlite:///{tmp_path / 'shop.db'}", model_dir=str(tmp_path / "m")
    )
    own = Engine(settings)
    own.start()
    yield own
    own.close()


def event(user: str, item: str, t: float, **extra: object) -> dict[str, str]:
    body = {"user_id": user, "item_id": item, "type": "view", "timestamp": T0 + t, **extra}
    return {"event": json.dumps(body)}


def test_entries_are_stored_then_acknowledged_and_bad_ones_set_aside(engine, redis_server) -> None:
    name = f"events-{uuid.uuid4().hex[:8]}"
    stream = EventStream(engine, redis_server.url, name, block_ms=10)
    stream.ensure_group()
    client = stream.client
    client.xadd(name, event("u1", "a", 0, event_id="e1"))
    client.xadd(name, event("u1", "b", 10))  # no event_id: the entry's id stands in
    client.xadd(name, {"event": "{not json"})
    client.xadd(name, {"event": json.dumps({"user_id": "u2", "type": "view"})})  # no item_id
    client.xadd(name, event("u2", "a", 5, timestamp="yesterday-ish"))
    client.xadd(name, {"something": "else"})
    client.xadd(name, event("u2", "c", 20))
    assert stream.poll_once() == 7
    assert engine.store.count_events() == 3
    assert client.xpending(name, "equilibra")["pending"] == 0  # all acknowledged
    rejected = client.xrange(f"{name}:rejected")
    reasons = [fields["reason"] for _, fields in rejected]
    assert len(reasons) == 4 and stream.rejects == 4
    assert reasons[0].startswith("event: not JSON")
    assert reasons[1].startswith("item_id")
    assert "timestamp" in reasons[2]
    assert "no field 'event'" in reasons[3]
    assert all("entry_id" in fields for _, fields in rejected)
    # The events are learnt as the API's are: the user's session is there at once.
    user = engine.state.user("u1")
    assert user is not None and [s.item for s in user.history] == ["a", "b"]
    stream.stop()


def test_redelivery_is_exactly_once(engine, redis_server, monkeypatch) -> None:
    name = f"events-{uuid.uuid4().hex[:8]}"
    dead = EventStream(engine, redis_server.url, name, consumer="dead", block_ms=10)
    dead.ensure_group()
    for t in range(5):
        dead.client.xadd(name, event(f"u{t}", "a", t))  # none has an event_id
    # A consumer reads and dies before storing: its entries stay pending with it...
    assert len(dead._read(name, ">", 10)) == 5
    assert dead.client.xpending(name, "equilibra")["pending"] == 5
    # ...and another claims them once they have been idle long enough.
    other = EventStream(engine, redis_server.url, name, consumer="other", claim_idle_ms=0)
    assert other.poll_once(block_ms=10) == 5
    assert engine.store.count_events() == 5
    # A lost acknowledgement: stored, but the XACK never reached Redis.
    for t in range(5, 8):
        other.client.xadd(name, event(f"u{t}", "a", t))
    real_pipeline = other.client.pipeline

    class LostAck(Exception):
        pass

    def failing_pipeline(*args, **kwargs):
        pipe = real_pipeline(*args, **kwargs)
        pipe.execute = lambda: (_ for _ in ()).throw(LostAck())
        return pipe

    monkeypatch.setattr(other.client, "pipeline", failing_pipeline)
    with pytest.raises(LostAck):
        other.poll_once(block_ms=10)
    assert engine.store.count_events() == 8
    monkeypatch.setattr(other.client, "pipeline", real_pipeline)
    assert other.poll_once(block_ms=10) == 3  # its own pending entries, read again
    assert engine.store.count_events() == 8  # the same entry ids: duplicates, not new events
    assert other.client.xpending(name, "equilibra")["pending"] == 0
    dead.stop()
    other.stop()


def test_a_stream_needs_redis() -> None:
    from equilibra.errors import EquilibraError

    with pytest.raises(EquilibraError, match="REDIS_STREAM"):
        load_settings(None, environ={"EQUILIBRA_REDIS_STREAM": "events"})
