"""Background retraining and hot swap.

A watcher thread checks the model folder every `poll_s` seconds and loads a new current version
(published by this trainer, by a cron'd `equilibra fit`, or by `equilibra rollback`): loading
happens beside serving, and the swap is one reference assignment, so no request waits for it.

The trainer runs `equilibra fit --db … --out …` in a separate process (training is CPU-bound;
in-process it would hold the interpreter) when there is no model and the store has events, and
then every `retrain_events` new events or `retrain_seconds` seconds, whichever comes first.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

from equilibra.service.engine import Engine

log = logging.getLogger("equilibra.service")
PURGE_EVERY_S = 3600.0  # the retention period is applied hourly


class Trainer:
    def __init__(self, engine: Engine, poll_s: float = 2.0, budget_s: float = 60.0):
        self.engine = engine
        self.poll_s = poll_s
        self.budget_s = budget_s
        self.running = False
        self.trained_at_events = engine.counters.events
        self.trained_at_time = time.monotonic()
        self.runs = 0
        self.last_error: str | None = None
        self._purged_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="equilibra-trainer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def due(self) -> bool:
        s = self.engine.settings
        if self.engine.model is None:
            return self.engine.counters.events > 0 and self.runs == 0
        new_events = self.engine.counters.events - self.trained_at_events
        if s.retrain_events is not None and new_events >= s.retrain_events:
            return True
        elapsed = time.monotonic() - self.trained_at_time
        return s.retrain_seconds is not None and elapsed >= s.retrain_seconds and new_events > 0

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.engine.load_model()
                if time.monotonic() - self._purged_at > PURGE_EVERY_S:
                    self._purged_at = time.monotonic()
                    self.engine.purge()
                if self.due():
                    self.train()
                    self.engine.load_model()
            except Exception as exc:  # a failed retrain must not stop serving
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("retraining failed: %s", self.last_error)

    def train(self) -> bool:
        s = self.engine.settings
        self.running = True
        self.trained_at_events = self.engine.counters.events
        self.trained_at_time = time.monotonic()
        self.runs += 1
        command = [
            sys.executable, "-m", "equilibra.cli", "fit", "--db", s.db, "--out", str(s.model_dir),
            "--algorithm", "auto", "--budget", str(self.budget_s),
        ]  # fmt: skip
        log.info("retraining: %s", " ".join(command))
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        finally:
            self.running = False
        if done.returncode != 0:
            self.last_error = (done.stderr.strip().splitlines() or ["no output"])[-1]
            log.error("retraining failed (exit %d): %s", done.returncode, self.last_error)
            return False
        self.last_error = None
        return True
