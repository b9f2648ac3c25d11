"""The service's state and the few operations that change it, behind one lock where they must
not interleave: the store, the catalogue, the online state, the model version being served,
the policy, the feedback ledger and the clock.

The clock is event time (design.md "Attribution and time"): the latest timestamp seen on events
and recommend requests. Whenever it moves, impressions whose attribution window has ended are
closed: the policy learns each shown item once and the reward is written onto the log.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from equilibra.data.columns import Columns as C
from equilibra.data.columns import is_missing
from equilibra.errors import EquilibraError
from equilibra.evaluate.experiments import Experiment, SplitTest
from equilibra.explore.adaptive import Adaptive
from equilibra.explore.feedback import (
    PINNED,
    ClosedImpression,
    FeedbackLedger,
    outcome_rewards,
    teach,
)
from equilibra.explore.policies import LinearMixin, Policy
from equilibra.explore.slate import Candidates, Slate
from equilibra.explore.spec import parse_policy
from equilibra.online.catalog import Catalog
from equilibra.online.state import InProcessState, OnlineState, UserState
from equilibra.pipeline.artifact import CURRENT, ModelArtifact, current, rollback
from equilibra.rank.rules import Rule
from equilibra.service.dashboard.timeline import Timeline
from equilibra.service.experiments import Arm, Experiments
from equilibra.service.fleet_log import CLOSED, Entry
from equilibra.service.model import ServingModel
from equilibra.service.settings import Settings
from equilibra.service.shown_index import ShownIndex
from equilibra.service.writer import ImpressionWriter
from equilibra.store import Store, open_store

log = logging.getLogger("equilibra.service")
DAY = 86_400.0
SNAPSHOT = "policy"  # the store's snapshot of the policy and what goes with it
FLEET_SNAPSHOT = "policy/fleet"  # replicas learning together: the latest of any of them
FLEET_START = "0-0"  # the fleet log's position before its first entry
LEARNT_IDS_KEPT = 200_000  # impressions remembered as learnt, to learn none twice
APPLY_WAIT_S = 10.0  # how long a change that waits for its turn in the fleet log may wait
# What `ingest` reads of each event, in this order.
_INGEST_COLUMNS = (C.event_id, C.user, C.item, C.event_type, C.timestamp, C.value, C.impression_id)
SNAPSHOT_EVERY_S = 5.0  # at most this often (wall time) while impressions keep closing
# The snapshot holds the engine's lock while it copies the state, which grows with the arms
# learnt: saves are spaced so that this stall takes at most 1 / SNAPSHOT_DUTY of the time.
# A restart relearns what closed after the last snapshot from the impression log.
SNAPSHOT_DUTY = 200.0
# Where the policy's arm statistics go in the snapshot's text: the first value the encoder
# writes after "spec" (no spec or policy field holds NUL characters).
_ARMS_MARK = "\x00arms\x00"
_ARMS_MARK_JSON = json.dumps(_ARMS_MARK)


@dataclass
class Counters:
    events: int = 0
    impressions: int = 0
    rewards: int = 0
    rewarded_slots: int = 0
    closed_slots: int = 0
    learnt_impressions: int = 0  # closed impressions the policy learnt (any replica's)
    # Shown items the policy learnt and those that earned something: the prior's centre, the
    # same on replicas in step (closed_/rewarded_slots count what this replica closed).
    learnt_slots: int = 0
    adopted: int = 0  # open impressions adopted from replicas that did not come back
    learnt_rewarded_slots: int = 0
    explore_slots: dict[tuple[str, str], int] = field(default_factory=dict)
    shown_slots: dict[tuple[str, str], int] = field(default_factory=dict)


def open_online_state(settings: Settings) -> OnlineState:
    """In this process's memory, or in Redis when `EQUILIBRA_REDIS` names one (shared)."""
    if settings.redis is None:
        return InProcessState()
    from equilibra.online.redis_state import RedisState

    state = RedisState(settings.redis, prefix=settings.redis_prefix)
    if not state.available:
        log.warning("EQUILIBRA_REDIS=%s does not answer yet: serving without it", settings.redis)
    return state


def dumps_in_pieces(value: object, piece: int = 4096) -> str:
    """`json.dumps(value, allow_nan=True)`, written a list piece at a time: one call of the C
    encoder holds the GIL until it returns (10 ms for a snapshot's 38 k arms, every request
    waiting), and between pieces the event loop gets its turn."""
    if isinstance(value, dict) and all(type(key) is str for key in value):
        fields = (f"{json.dumps(key)}: {dumps_in_pieces(v, piece)}" for key, v in value.items())
        return "{" + ", ".join(fields) + "}"
    if isinstance(value, list) and len(value) > piece:
        pieces = (
            json.dumps(value[start : start + piece], allow_nan=True)[1:-1]
            for start in range(0, len(value), piece)
        )
        return "[" + ", ".join(pieces) + "]"
    return json.dumps(value, allow_nan=True)


class FeedbackPublisher(Protocol):
    def publish(self, rows: Sequence[tuple[Any, ...]]) -> None: ...


class FleetPublisher(Protocol):
    def publish(self, closed: Sequence[ClosedImpression]) -> bool: ...

    def publish_change(self, kind: str, body: Mapping[str, Any], applied: bool) -> str | None: ...


class SnapshotSaver:
    """Saves the engine's snapshot on its own thread when asked. A save flushes the impression
    writer and commits; the request whose clock closed the impressions runs on the event loop,
    and waiting there for the writer stalled every request behind it (p99 0.1-0.5 s at 200
    requests/s once impressions close, as they do at any time after the first attribution
    window)."""

    def __init__(self, save: Callable[[], None]):
        self._save = save
        self._due = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="equilibra-snapshot", daemon=True)
        self._thread.start()

    def request(self) -> None:
        self._due.set()

    def stop(self) -> None:
        self._stopping = True
        self._due.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            self._due.wait()
            if self._stopping:
                return
            self._due.clear()
            try:
                self._save()
            except Exception:  # a failed save is retried at the next request; serving goes on
                log.exception("policy snapshot failed")


class Engine:
    def __init__(self, settings: Settings, store: Store | None = None):
        self.settings = settings
        self.store = store or open_store(settings.db)
        self.writer = ImpressionWriter(self.store)
        self.catalog = Catalog()
        self.state = open_online_state(settings)
        self.model: ServingModel | None = None
        self.policy: Policy = self.make_policy(settings.policy_spec)
        self.experiments = Experiments(Path(settings.model_dir), self.make_policy)
        self.ledger = FeedbackLedger(settings.rewards, window_s=settings.attribution_window)
        self.rules: dict[str, Rule] = {}
        self.explore_excluded = settings.explore_excluded  # parsed once, read every request
        self.counters = Counters()
        self.timeline = Timeline()  # what the dashboard plots over time
        self.clock = float("-inf")
        self.rng = np.random.default_rng(settings.seed)
        self.lock = threading.RLock()  # policy, ledger, clock
        self.ingest_lock = threading.Lock()  # one batch of events at a time
        self.started = time.time()
        self._snapshot_at = 0.0  # monotonic time of the last snapshot (or its request)
        self._snapshot_every = SNAPSHOT_EVERY_S  # longer once the state takes long to copy
        self._snapshot_lock = threading.Lock()  # one save at a time, the newest state last
        self._saver: SnapshotSaver | None = None  # started at the first periodic snapshot
        self._promoted = False  # the policy is an experiment's winner, not the configured one
        self.bus: FeedbackPublisher | None = None  # replicas: feedback_bus.FeedbackBus
        self.shown: ShownIndex | None = None  # replicas: who showed what (shown_index.py)
        if settings.redis is not None:
            self.shown = ShownIndex(settings.redis, settings.redis_prefix, self.ledger.window_s)
        # Replicas on one Redis learn together (fleet_log.py): each closed impression is
        # taught, in the fleet log's order, to every replica's policy; admin changes travel
        # the same way.
        self.shared_learning = settings.redis is not None
        self.fleet: FleetPublisher | None = None  # fleet_log.FleetLog
        self.learned_through = FLEET_START  # the last entry of that log applied here
        self._applied = threading.Condition()  # notified as `learned_through` moves
        self._learnt_ids: set[str] = set()  # the latest impressions learnt (LEARNT_IDS_KEPT)
        self._learnt_order: deque[str] = deque()
        self.origin = settings.replica or uuid.uuid4().hex  # this replica, in shared logs
        self._snapshot_clock: float | None = None

    def make_policy(self, spec: str) -> Policy:
        """A policy from its spec, with the service's budgets (ValueError for a bad spec)."""
        policy = parse_policy(spec)
        if isinstance(policy, Adaptive):
            policy.controller.budget = self.settings.budget
            policy.new_age = self.state.config.new_item_age_s
        return policy

    # --- start ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Catalogue, model, online state (recent events replayed), open impressions."""
        items = self.store.items_frame()
        self.catalog.upsert_frame(items)
        if self.settings.rules is not None:
            log.info(
                "%d business rules from %s",
                self.load_rules(self.settings.rules),
                self.settings.rules,
            )
        self.load_model()
        stats = self.store.stats()
        self.counters.events = stats.events
        self.counters.impressions = stats.impressions
        snapshot_clock = self._restore()
        since = self._replay_from()
        replayed = self.store.events_frame(since=since)
        if self._seeds_state():
            columns = [C.user, C.item, C.event_type, C.timestamp]
            self.state.learn_many(
                (str(u), str(i), str(t), float(s))
                for u, i, t, s in replayed[columns].itertuples(index=False)
            )
        if len(replayed):
            self.clock = float(replayed[C.timestamp].max())
        opened = self._own(self.store.impressions_frame(open_only=True))
        if len(opened):
            earliest = float(opened[C.timestamp].min())
            reopened = self.ledger.reopen(opened, self.store.events_frame(since=earliest))
            self.clock = max(self.clock, float(opened[C.timestamp].max()))
            log.info("reopened %d impressions still waiting for feedback", reopened)
        self._snapshot_clock = snapshot_clock
        if not self.shared_learning:  # shared: the fleet log replays what came after
            self._relearn_since(snapshot_clock)
        self.purge()
        log.info(
            "started: %d events (%d replayed into the online state), %d items, model %s",
            stats.events,
            len(replayed),
            len(self.catalog),
            self.model.version if self.model else "none",
        )

    def _own(self, impressions: pd.DataFrame) -> pd.DataFrame:
        """The rows of impressions this replica served (or that no replica claims): among
        replicas sharing one store, each reopens and relearns only its own, so a reward is
        learnt by one policy once."""
        if self.settings.replica is None:
            return impressions
        owner = impressions[C.replica]
        return impressions[owner.isna() | (owner == self.settings.replica)]

    def _seeds_state(self) -> bool:
        """Whether this process replays recent events into the online state: always for its
        own memory; for a shared (Redis) state only the first replica, once."""
        claim = getattr(self.state, "claim_seed", None)
        if claim is None:
            return True
        seeds = bool(claim())
        log.info(
            "shared online state: %s",
            "empty, seeded from the store's recent events"
            if seeds
            else "already seeded by another replica",
        )
        return seeds

    # --- snapshots: a restart resumes the policy where it stopped --------------------------------
    def snapshot(self) -> None:
        """Save the policy's statistics with the clock they are up to date with."""
        with self._snapshot_lock:
            self._save_snapshot()

    def _snapshot_soon(self) -> None:
        """The periodic snapshot, off the request path (SnapshotSaver)."""
        self._snapshot_at = time.monotonic()
        if self._saver is None:
            # Late-bound: a test that replaces `snapshot` (to play a crash) stops these too.
            self._saver = SnapshotSaver(lambda: self.snapshot())
        self._saver.request()

    def _save_snapshot(self) -> None:
        with self.lock:
            locked_at = time.perf_counter()
            c = self.counters
            policy = self.policy.state_dict()
            # The arms' statistics are most of the text and a fresh copy: encoded off the lock.
            arms = policy.get("arms")
            if arms is not None:
                policy["arms"] = _ARMS_MARK
            state = {
                "spec": self.policy.spec,
                "policy": policy,
                "clock": self.clock,
                "closed_slots": c.closed_slots,
                "rewarded_slots": c.rewarded_slots,
                "rewards": c.rewards,
                "learnt": [c.learnt_impressions, c.learnt_slots, c.learnt_rewarded_slots],
                "promoted": self._promoted,
                "experiments": self.experiments.state_dict(),
                "learned_through": self.learned_through,
                "rules": [rule.to_json() for rule in self.rules.values()],
            }
            text = json.dumps(state, allow_nan=True)
            stall = time.perf_counter() - locked_at
        if arms is not None:
            text = text.replace(_ARMS_MARK_JSON, dumps_in_pieces(arms), 1)
        self._snapshot_every = max(SNAPSHOT_EVERY_S, SNAPSHOT_DUTY * stall)
        # The rewards this state has learned from are in the log before the state is saved.
        self.writer.flush()
        saved_at = time.time()
        self.store.save_snapshot(self._snapshot_name, text, saved_at)
        if self.shared_learning:  # what a replica joining the fleet starts from
            self.store.save_snapshot(FLEET_SNAPSHOT, text, saved_at)
        self._snapshot_at = time.monotonic()

    @property
    def _snapshot_name(self) -> str:
        """Each replica resumes its own policy: they learn from different impressions."""
        replica = self.settings.replica
        return SNAPSHOT if replica is None else f"{SNAPSHOT}@{replica}"

    def _restore(self) -> float | None:
        """Load the policy snapshot (if it is of the configured policy); -> its clock."""
        saved = self.store.load_snapshot(self._snapshot_name)
        if saved is None and self.shared_learning:
            return self._join_fleet()
        if saved is None:
            return None
        state = json.loads(saved[0])
        self.learned_through = str(state.get("learned_through", FLEET_START))
        self._restore_rules(state)
        if state.get("promoted") and state.get("spec") != self.policy.spec:
            # An A/B test's winner, promoted over the configured policy: it keeps serving.
            log.warning(
                "serving %s, promoted by an experiment, instead of the configured %s;"
                " set EQUILIBRA_POLICY to make it permanent",
                state["spec"],
                self.policy.spec,
            )
            self.policy = self.make_policy(str(state["spec"]))
            self._promoted = True
        self.experiments.load_state_dict(state.get("experiments", {}), self.policy)
        if state.get("spec") != self.policy.spec:
            log.warning(
                "snapshot of policy %s ignored: this server runs %s",
                state.get("spec"),
                self.policy.spec,
            )
            return None
        self.policy.load_state_dict(state["policy"])
        c = self.counters
        c.closed_slots = int(state.get("closed_slots", 0))
        c.rewarded_slots = int(state.get("rewarded_slots", 0))
        c.rewards = int(state.get("rewards", 0))
        self._restore_learnt(state)
        clock = float(state.get("clock", float("-inf")))
        log.info("policy restored from its snapshot (clock %s)", clock)
        return clock

    def _join_fleet(self) -> float | None:
        """A replica with no snapshot of its own, joining replicas that learn together, starts
        from the fleet's latest policy state (and replays the fleet log from there), with a
        budget spend of its own."""
        saved = self.store.load_snapshot(FLEET_SNAPSHOT)
        if saved is None:
            return None
        state = json.loads(saved[0])
        if state.get("spec") != self.policy.spec:
            log.warning(
                "the fleet's policy %s differs from this replica's %s: starting afresh",
                state.get("spec"),
                self.policy.spec,
            )
            return None
        self.policy.load_state_dict(state["policy"])
        if isinstance(self.policy, Adaptive):
            self.policy.controller.forget_spend()
        self._restore_rules(state)
        self.experiments.load_state_dict(state.get("experiments", {}), self.policy)
        self._restore_learnt(state)
        self.learned_through = str(state.get("learned_through", FLEET_START))
        clock = float(state.get("clock", float("-inf")))
        log.info("joined the fleet's policy state (fleet log at %s)", self.learned_through)
        return clock

    def _restore_learnt(self, state: Mapping[str, Any]) -> None:
        """What the policy has learnt from, counted (older snapshots: what was closed here)."""
        c = self.counters
        saved = state.get("learnt") or [
            0,
            state.get("closed_slots", 0),
            state.get("rewarded_slots", 0),
        ]
        c.learnt_impressions, c.learnt_slots, c.learnt_rewarded_slots = (int(v) for v in saved)

    def _restore_rules(self, state: Mapping[str, Any]) -> None:
        """Rules posted to the API live on in snapshots; the rules file's, read at start, win."""
        for saved in state.get("rules", []):
            rule = Rule.from_json(saved)
            self.rules.setdefault(rule.id, rule)

    def apply_fleet(self, entries: Sequence[Entry]) -> None:
        """Entries of the fleet log, in its order. Another replica's closed impressions are
        taught without their budget charges (spend is per replica), and an A/B test arm
        unknown here teaches nobody; what this replica applied itself is skipped."""
        with self.lock:
            for entry in entries:
                try:
                    if not entry.applied and entry.kind == CLOSED:
                        for closed in entry.body:
                            self._learn_closed(closed, mine=entry.mine)
                    elif not entry.applied:
                        self._apply_change(entry.kind, entry.body)
                except Exception:  # one bad entry must not stop the log (nor be retried)
                    log.exception("fleet log: entry %s (%s) skipped", entry.entry_id, entry.kind)
                self.learned_through = entry.entry_id
        with self._applied:
            self._applied.notify_all()

    def adopt(self, replica: str) -> int:
        """Take over a replica that is gone (service/adoption.py): its open impressions become
        this one's, in the store and in the ledger, with the feedback that reached the fleet
        meanwhile; they are credited, once, when their windows close. -> impressions adopted.

        Under both locks: no event is stored without being attributed while the store is
        read, so each is counted once (the ledger drops a second offer by the feedback bus)."""
        me = self.settings.replica
        if me is None or replica == me:
            return 0
        with self.ingest_lock, self.lock:
            moved = self.store.reassign_open_impressions(replica, me)
            if not moved:
                return 0
            # Only those moved: this replica's own rows may still look open for a moment
            # after it closed them (their rewards are written behind, service/writer.py).
            rows = self.store.impressions_frame(open_only=True)
            rows = rows[rows[C.impression_id].astype(str).isin(moved)]
            if rows.empty:
                return 0
            events = self.store.events_frame(since=float(rows[C.timestamp].min()))
            adopted = self.ledger.adopt(rows, events)
            self.clock = max(self.clock, float(rows[C.timestamp].max()))
        self.counters.adopted += adopted
        log.warning("adopted %d open impressions of replica %s, which is gone", adopted, replica)
        self.advance(self.clock, force=True)  # those whose window has passed close now
        return adopted

    def _learn_closed(self, closed: ClosedImpression, mine: bool = True) -> None:
        """Teach one closed impression (a fleet log entry) and count it in its A/B test; one
        offered again (an append retried after a timeout Redis had in fact taken) is not."""
        if closed.impression_id in self._learnt_ids:
            return
        self._learnt_ids.add(closed.impression_id)
        self._learnt_order.append(closed.impression_id)
        if len(self._learnt_order) > LEARNT_IDS_KEPT:
            self._learnt_ids.discard(self._learnt_order.popleft())
        if not mine:
            learners = self.experiments.learners
            if closed.variant is not None and closed.variant not in learners:
                return
            if closed.info and "charges" in closed.info:
                info = {k: v for k, v in closed.info.items() if k != "charges"}
                closed = dataclasses.replace(closed, info=info)
        teach(self.policy, closed, self.experiments.learners)
        self.experiments.observe(closed)
        self._count_learnt(closed)

    def _count_learnt(self, closed: ClosedImpression) -> None:
        c = self.counters
        c.learnt_impressions += 1
        c.learnt_slots += len(closed.outcomes)
        c.learnt_rewarded_slots += sum(1 for o in closed.outcomes if o.raw_reward > 0)

    def learn_gap(self, resume_from: str) -> None:
        """The learning log lost entries this replica needed: learn what closed since its
        snapshot from the impression log (every replica's), then go on from `resume_from`."""
        with self.lock:
            self._relearn_since(self._snapshot_clock, everyone=True)
            self.learned_through = resume_from

    def policy_digest(self) -> str:
        """A fingerprint of what the policy has learnt: equal on replicas in step."""
        with self.lock:
            text = json.dumps(self.policy.learned_state(), sort_keys=True, allow_nan=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _relearn_since(self, snapshot_clock: float | None, everyone: bool = False) -> None:
        """Impressions that closed after the snapshot (their rewards are in the log, but the
        policy's snapshot predates them): learn them now, each once (this replica's own, or
        with `everyone` every replica's)."""
        if snapshot_clock is None or not np.isfinite(snapshot_clock):
            return
        window = self.settings.attribution_window
        rows = self.store.impressions_frame(since=snapshot_clock - window)
        if not everyone:
            rows = self._own(rows)
        rows = rows[rows[C.reward].notna() & (rows[C.timestamp] + window > snapshot_clock)]
        config = self.ledger.config
        for row in rows.itertuples(index=False):
            record = row._asdict()
            if record[C.policy] == PINNED:
                continue
            prior = record[C.prior]
            exposure = record[C.exposure]
            learner = self.experiments.learners.get(str(record.get(C.variant)), self.policy)
            learner.learn_one(
                str(record[C.item]),
                config.scaled(float(record[C.reward])),
                segment=str(record[C.segment] or ""),
                prior=None if pd.isna(prior) else float(prior),
                exposure=1.0 if pd.isna(exposure) else float(exposure),
                placement=str(record[C.placement] or ""),
            )
        if len(rows):
            log.info("relearnt %d shown items closed after the last snapshot", len(rows))

    def _replay_from(self) -> float | None:
        if self.settings.replay_days <= 0:
            return None
        _, latest = self.store.event_time_range()
        return None if latest is None else latest - self.settings.replay_days * DAY

    # --- the model ------------------------------------------------------------------------------
    def load_model(self) -> bool:
        """Load the model folder's current version if it is not the one served; True if swapped."""
        root = Path(self.settings.model_dir)
        pointer = root / CURRENT
        if not pointer.exists():
            if (root / "equilibra.json").exists() and self.model is None:  # unversioned
                self.swap(ServingModel(ModelArtifact.load(root)))
                return True
            return False
        try:
            version = current(root)
        except EquilibraError as exc:
            log.warning("model: %s", exc)
            return False
        if self.model is not None and self.model.version == version:
            return False
        started = time.perf_counter()
        model = ServingModel(ModelArtifact.load(root, version))  # the version checked above
        self.swap(model)
        log.info(
            "model version %s (%s) loaded in %.1f s",
            version,
            model.algorithm,
            time.perf_counter() - started,
        )
        return True

    def swap(self, model: ServingModel) -> None:
        """A request holds the version it started with; the next one gets the new version."""
        self.model = model

    # --- writes ---------------------------------------------------------------------------------
    def ingest(self, events: pd.DataFrame) -> tuple[int, int]:
        """Store validated events (durable before this returns), then learn the new ones.
        -> (accepted, duplicates)."""
        # Plain lists, not pandas, past this point: a request's batch is a few events and a
        # pandas call costs as much for ten rows as for ten thousand.
        rows = list(zip(*(events[name].tolist() for name in _INGEST_COLUMNS), strict=True))
        with self.ingest_lock:
            if any(not is_missing(row[6]) for row in rows):
                # An acknowledged event never names an impression a crash could still lose.
                self.writer.flush()
            seen = self.store.existing_event_ids([str(row[0]) for row in rows])
            fresh = []
            for row in rows:  # the first of each new id, as the store keeps it
                if str(row[0]) not in seen:
                    seen.add(str(row[0]))
                    fresh.append(row)
            result = self.store.append_events(events)
            self.counters.events += result.accepted
            self.catalog.ensure(list(dict.fromkeys(str(row[2]) for row in fresh)))
            learnt = [(str(r[1]), str(r[2]), str(r[3]), float(r[4])) for r in fresh]
            self.state.learn_many(learnt)  # one round trip for the batch when it is shared
            fresh = self._attribute(fresh)
            for (user, item, kind, stamp), (*_, value, impression) in zip(
                learnt, fresh, strict=True
            ):
                shown = None if is_missing(impression) else str(impression)
                with self.lock:
                    if shown is not None and self.shown is not None and shown not in self.ledger:
                        continue  # another replica's impression: the feedback bus takes it there
                    self.ledger.observe(
                        user,
                        item,
                        kind,
                        stamp,
                        None if is_missing(value) else float(value),
                        shown,
                    )
            if fresh:
                if self.bus is not None:  # other replicas' open impressions may be answered
                    self.bus.publish(fresh)
                self.advance(max(float(row[4]) for row in fresh))
        return result.accepted, result.duplicates

    def _attribute(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Among replicas: the impression each rewarding event without one answers, from the
        shown index (shown_index.py), so exactly one replica credits it."""
        if self.shown is None:
            return rows
        value = self.ledger.config.value
        wanted = [i for i, row in enumerate(rows) if is_missing(row[6]) and value(str(row[3])) > 0]
        if not wanted:
            return rows
        found = self.shown.lookup(
            [(str(rows[i][1]), str(rows[i][2]), float(rows[i][4])) for i in wanted]
        )
        rows = list(rows)
        for i, impression in zip(wanted, found, strict=True):
            if impression is not None:
                rows[i] = (*rows[i][:6], impression)
        return rows

    def observe_elsewhere(self, events: Sequence[Sequence[Any]]) -> None:
        """Events another replica stored — (user, item, type, time, value, impression) — for
        this replica's open impressions, and its clock."""
        if not events:
            return
        with self.lock:
            for user, item, kind, stamp, value, shown in events:
                self.ledger.observe(str(user), str(item), str(kind), float(stamp), value, shown)
        self.advance(max(float(e[3]) for e in events))

    def advance(self, now: float, force: bool = False) -> None:
        """Move the clock; close what is due (the policy learns, rewards are written back).
        `force`: close what is due at the current clock even if `now` does not move it."""
        with self.lock:
            if now <= self.clock and not force:
                return
            now = self.clock = max(now, self.clock)
            closed: list[ClosedImpression] = []
            if self.fleet is None:
                outcomes = self.ledger.settle(
                    self.policy, now, self.experiments.learners, self._closed_and_learnt
                )
            else:  # taught when read back from the fleet log, in its order
                closed = self.ledger.close_impressions(now)
                outcomes = []
                for one in closed:
                    self.timeline.closed(one.variant or self.policy.spec, one)
                    outcomes += one.outcomes
        if outcomes:
            self.writer.rewards(outcome_rewards(outcomes))
        if closed and not self.fleet.publish(closed):  # type: ignore[union-attr]
            with self.lock:  # Redis is down: learn here now, the others later
                for one in closed:
                    self._learn_closed(one)
        if outcomes:
            rewarded = sum(1 for o in outcomes if o.raw_reward > 0)
            self.counters.rewards += rewarded
            self.counters.rewarded_slots += rewarded
            self.counters.closed_slots += len(outcomes)
            if time.monotonic() - self._snapshot_at >= self._snapshot_every:
                self._snapshot_soon()

    def _closed_and_learnt(self, closed: ClosedImpression) -> None:
        """A single server's impression closed and was learnt: its A/B test and the
        dashboard's tallies see it."""
        self.experiments.observe(closed)
        self.timeline.closed(closed.variant or self.policy.spec, closed)
        self._count_learnt(closed)

    def purge(self) -> tuple[int, int]:
        """Apply the retention period: delete what is older, by the event clock."""
        days = self.settings.retention_days
        if days is None or not np.isfinite(self.clock):
            return 0, 0
        self.writer.flush()
        events, impressions = self.store.purge_before(self.clock - days * DAY)
        self.counters.events -= events
        if events or impressions:
            log.info("retention: deleted %d events and %d impressions", events, impressions)
        return events, impressions

    def load_rules(self, path: Path) -> int:
        """Business rules from a JSON file: a list of objects as `POST /v1/rules` takes."""
        from pydantic import ValidationError as SchemaError

        from equilibra.domain import ValidationError
        from equilibra.service.schemas import RuleIn

        # The same checks and conversions as `POST /v1/rules` (an `until` date included).
        try:
            specs = json.loads(Path(path).read_text())
            rules = [
                RuleIn.model_validate({"id": f"file-{i}", **spec}).to_rule()
                for i, spec in enumerate(specs)
            ]
        except (OSError, ValueError, TypeError, SchemaError, ValidationError) as exc:
            raise EquilibraError(f"rules: cannot use {path} ({exc})") from None
        for rule in rules:
            self.rules[rule.id] = rule
        return len(rules)

    def forget(self, user_id: str) -> dict[str, int]:
        """Events, profile, impressions, online state and open impressions of one user."""
        self.writer.flush()  # the user's last impressions too
        result = self.store.forget_user(user_id)
        self.state.forget_user(user_id)
        with self.lock:
            dropped = self.ledger.forget_user(user_id)
        self._share("forget", {"user": user_id})  # the others' open impressions of the user
        self.counters.events -= result.events
        return {
            "events": result.events,
            "impressions": result.impressions,
            "profile": result.profile,
            "open_impressions": dropped,
        }

    # --- serving --------------------------------------------------------------------------------
    @property
    def base_rate(self) -> float:
        """The reward rate per shown slot so far (the prior's centre), 0.05 until it is known."""
        c = self.counters
        if c.learnt_slots < 1000:
            return 0.05
        return float(min(max(c.learnt_rewarded_slots / c.learnt_slots, 0.005), 0.3))

    def segment(self, user_id: str) -> str:
        return self.segment_of(user_id, self.state.user(user_id))

    def segment_of(self, user_id: str, user: UserState | None) -> str:
        """ "known" or "new", from the model and the user's online state `user`."""
        known = (self.model is not None and self.model.knows_user(user_id)) or (
            user is not None and user.events >= 3
        )
        return "known" if known else "new"

    def explore(self, candidates: Candidates, k: int, policy: Policy | None = None) -> Slate:
        with self.lock:
            return (policy or self.policy).select(candidates, k, self.rng)

    def record(
        self,
        impression_id: str,
        user_id: str,
        timestamp: float,
        slate: Slate,
        candidates: Candidates,
        rows: Sequence[dict[str, object]],
        arm: Arm | None = None,
    ) -> None:
        """Log the impression (`rows`, pins included) and open it in the ledger; `arm`: the
        A/B test arm that served it (whose policy learns from it)."""
        self.writer.rows(rows)
        policy = self.policy if arm is None else arm.policy
        index = {str(item): i for i, item in enumerate(candidates.items.tolist())}
        priors = candidates.prior_or(policy.base_rate)
        items = [str(r[C.item]) for r in rows]
        chosen = [r[C.policy] != PINNED for r in rows]
        rows_of = [index.get(item, 0) for item in items]
        # Only a linear policy learns from features: the others' open impressions skip them.
        features = candidates.features if isinstance(policy, LinearMixin) else None
        with self.lock:
            self.ledger.record(
                impression_id,
                user_id,
                timestamp,
                items,
                np.where(chosen, priors[rows_of], 0.5),
                None if features is None else features[rows_of],
                candidates.segment,
                candidates.placement,
                positions=[int(r[C.position]) for r in rows],  # type: ignore[call-overload]
                learnable=chosen,
                explore=[bool(r[C.explore]) for r in rows],
                info=slate.extras.get("controller"),  # type: ignore[arg-type]
                variant=None if arm is None else arm.key,
            )
            key = (candidates.placement, candidates.segment)
            c = self.counters
            c.impressions += 1
            c.shown_slots[key] = c.shown_slots.get(key, 0) + len(slate)
            c.explore_slots[key] = c.explore_slots.get(key, 0) + int(slate.explore_flags.sum())
        self.timeline.shown(items)  # the dashboard's count: no need for the lock
        if self.shown is not None:
            self.shown.remember(user_id, items, impression_id, timestamp)

    def exploration(self) -> dict[str, object]:
        """What `GET /v1/exploration` answers: per placement and segment the rate and why (the
        balance controller's state under `adaptive`; for a fixed policy, the shares it explored)."""
        policy = self.policy
        with self.lock:
            if isinstance(policy, Adaptive):
                state = policy.explain()
                return {
                    "policy": policy.spec,
                    "controller": "balance",
                    "why": "EQUILIBRA_POLICY=adaptive: "
                    "the balance controller sets each segment's rate",
                    "exploration_rate": policy.exploration_rate,
                    "new_items_owed": sum(
                        1 for n, r in policy.new_evidence.values() if policy.owes(n, r)
                    ),
                    **state,
                }
            c = self.counters
            segments = []
            for (placement, segment), slots in sorted(c.shown_slots.items()):
                explored = c.explore_slots.get((placement, segment), 0)
                segments.append(
                    {
                        "placement": placement,
                        "segment": segment,
                        "exploration_rate": explored / slots if slots else 0.0,
                        "shown_items": slots,
                        "why": f"fixed policy {policy.spec}",
                        "budget_spent": None,
                    }
                )
            return {
                "policy": policy.spec,
                "controller": None,
                "why": f"EQUILIBRA_POLICY={self.settings.policy}: a fixed policy",
                "exploration_rate": policy.exploration_rate,
                "segments": segments,
                "history": [],
            }

    def learning(self) -> dict[str, object]:
        """How the policy learns: alone, or with the replicas sharing its fleet log. Asked
        for by `GET /v1/exploration` only: the digest hashes the whole learnt state."""
        return {
            "shared": self.fleet is not None,
            "learned_through": self.learned_through if self.fleet is not None else None,
            "impressions_learnt": self.counters.learnt_impressions,
            "digest": self.policy_digest(),
        }

    # --- A/B tests ------------------------------------------------------------------------------
    def arm_for(self, user_id: str, placement: str) -> Arm | None:
        with self.lock:
            return self.experiments.arm_for(user_id, placement)

    def start_experiment(self, test: SplitTest, preview: dict[str, object] | None = None) -> None:
        """Run a test `experiments.prepare` made (ValueError naming the field), here and on
        every replica."""
        with self.lock:
            self.experiments.start(test)
            if preview is not None:
                self.experiments.previews[test.experiment.name] = preview
        self._share("experiment", {"experiment": test.experiment.state_dict(), "preview": preview})

    def stop_experiment(self, name: str) -> Experiment:
        with self.lock:
            experiment = self.experiments.stop(name)
        self._share("stop", {"name": name})
        self.snapshot()
        return experiment

    def promote(self, name: str, variant: str) -> Experiment:
        """Stop the test and make the variant the service's: its policy (with what it has
        learned), its rules, its model version (made current, as a rollback would). Among
        replicas, at its turn in the fleet log, everywhere: it changes which policy learns."""
        experiment = self.experiments.get(name)  # KeyError: no such test
        if variant not in {v.name for v in experiment.variants}:
            names = ", ".join(v.name for v in experiment.variants)
            raise ValueError(f"variant: {variant!r} is not one of {names}")
        body = {"name": name, "variant": variant}
        entry = None if self.fleet is None else self.fleet.publish_change("promote", body, False)
        if entry is None:  # alone, or Redis is down (then it is sent later, as done here)
            return self._promote(name, variant)
        self._wait_applied(entry)
        return self.experiments.get(name)

    def _wait_applied(self, entry_id: str) -> None:
        """Until this replica has applied the fleet log up to `entry_id` (or APPLY_WAIT_S)."""
        from equilibra.service.fleet_log import stream_id

        wanted = stream_id(entry_id)
        with self._applied:
            done = self._applied.wait_for(
                lambda: stream_id(self.learned_through) >= wanted, timeout=APPLY_WAIT_S
            )
        if not done:
            log.warning("fleet log: %s not applied here within %.0f s", entry_id, APPLY_WAIT_S)

    def _promote(self, name: str, variant: str) -> Experiment:
        with self.lock:
            experiment, chosen, arm = self.experiments.promote(name, variant)
            if chosen.policy is not None and arm.policy is not self.policy:
                self.experiments.adopt(self.policy, arm.policy)
                self.policy = arm.policy
                self._promoted = True
            for rule in arm.rules:
                self.rules[rule.id] = rule
        if chosen.model_version is not None and (
            self.model is None or self.model.version != chosen.model_version
        ):
            rollback(Path(self.settings.model_dir), chosen.model_version)
            self.load_model()
        self.snapshot()
        return experiment

    # --- changes every replica applies -------------------------------------------------------
    def upsert_items(self, items: pd.DataFrame) -> int:
        """Validated item rows: into the store and the catalogue, here and on every replica."""
        written = self.store.upsert_items(items)
        self.catalog.upsert_frame(items)
        if self.fleet is not None:
            records = items.astype(object).where(items.notna(), None).to_dict("records")
            self._share("items", {"items": records})
        return written

    def add_rule(self, rule: Rule) -> None:
        with self.lock:
            self.rules[rule.id] = rule
        self._share("rule", rule.to_json())
        self.snapshot()  # it survives a restart from now on

    def delete_rule(self, rule_id: str) -> bool:
        with self.lock:
            found = self.rules.pop(rule_id, None) is not None
        if found:
            self._share("unrule", {"id": rule_id})
            self.snapshot()
        return found

    def _share(self, kind: str, body: Mapping[str, Any]) -> None:
        """A change made here, for the other replicas (fleet_log.py)."""
        if self.fleet is not None:
            self.fleet.publish_change(kind, body, applied=True)

    def _apply_change(self, kind: str, body: Mapping[str, Any]) -> None:
        """Another replica's change (or this one's promotion, at its turn in the log)."""
        if kind == "items":
            self.catalog.upsert_frame(pd.DataFrame(list(body["items"])))
        elif kind == "rule":
            rule = Rule.from_json(body)
            self.rules[rule.id] = rule
        elif kind == "unrule":
            self.rules.pop(str(body["id"]), None)
        elif kind == "forget":
            self.ledger.forget_user(str(body["user"]))
        elif kind == "experiment":
            experiment = Experiment.from_state(body["experiment"])
            self._start_here(experiment, body.get("preview"))
        elif kind == "stop":
            self.experiments.stop(str(body["name"]))
        elif kind == "promote":
            self._promote(str(body["name"]), str(body["variant"]))
        else:
            log.warning("fleet log: unknown change %r ignored (a newer replica's?)", kind)

    def _start_here(self, experiment: Experiment, preview: dict[str, object] | None) -> None:
        """An A/B test another replica started (ValueError when it cannot run here)."""
        with self.lock:
            if experiment.name in self.experiments.tests:
                return
            self.experiments.start(self.experiments.prepare(experiment, self.policy))
            if preview is not None:
                self.experiments.previews[experiment.name] = preview

    @staticmethod
    def new_impression_id() -> str:
        return uuid.uuid4().hex

    def close(self) -> None:
        if self._saver is not None:
            self._saver.stop()
        self.snapshot()
        if self.shown is not None:
            self.shown.close()
        self.writer.close()
        self.store.close()
        closing = getattr(self.state, "close", None)
        if closing is not None:
            closing()
