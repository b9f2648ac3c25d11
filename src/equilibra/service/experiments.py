"""The service's A/B tests: each variant's policy, model version and rules, the routing of a
request to its user's variant, the statistics, and a preview estimated off-policy before launch.

A variant without a policy of its own is served (and learns) with the service's policy, so a
control that is "what runs today" keeps today's learning. The statistics and the assignment are
`evaluate.experiments`; this module only holds what a running server needs beside them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from equilibra.errors import EquilibraError
from equilibra.evaluate.bandit_logs import BanditLog
from equilibra.evaluate.experiments import Experiment, SplitTest, Variant, prediction_interval
from equilibra.explore.feedback import ClosedImpression
from equilibra.explore.policies import Policy
from equilibra.pipeline.artifact import ModelArtifact, versions
from equilibra.rank.rules import Rule
from equilibra.service.model import ServingModel
from equilibra.service.offpolicy import estimates

log = logging.getLogger("equilibra.service")
# The preview replays the impressions of this many recent days (by the event clock).
PREVIEW_DAYS = 7.0


@dataclass(frozen=True)
class Arm:
    """What serves one request of a test: the variant's policy, model and extra rules."""

    experiment: str
    variant: str
    key: str  # `experiment/variant`, as the impression log and the ledger carry it
    policy: Policy
    model: ServingModel | None  # None: the version being served
    rules: tuple[Rule, ...]


class Experiments:
    def __init__(self, model_dir: Path, make_policy: Callable[[str], Policy]):
        self.model_dir = model_dir
        self.make_policy = make_policy
        self.tests: dict[str, SplitTest] = {}  # stopped ones too: their impressions still close
        self._models: dict[int, ServingModel] = {}  # of the running tests' variants
        self._rules: dict[str, tuple[Rule, ...]] = {}  # by arm key
        self.previews: dict[str, dict[str, Any]] = {}  # per test, made before it started
        self._relink()

    # --- definitions ----------------------------------------------------------------------------
    def prepare(self, experiment: Experiment, default: Policy) -> SplitTest:
        """The test with each variant's policy (ValueError naming the field when it cannot
        run): cheap checks, made before the preview's replay of the log."""
        if experiment.name in self.tests:
            raise ValueError(f"name: an experiment {experiment.name!r} exists already")
        kept = versions(self.model_dir)
        policies: dict[str, Policy] = {}
        for index, variant in enumerate(experiment.variants):
            if variant.model_version is not None and variant.model_version not in kept:
                raise ValueError(
                    f"variants[{index}].model_version: no version {variant.model_version} "
                    f"(kept: {', '.join(map(str, kept)) or 'none'})"
                )
            if variant.policy is None:
                policies[variant.name] = default
                continue
            try:
                policies[variant.name] = self.make_policy(variant.policy)
            except (ValueError, EquilibraError) as exc:
                raise ValueError(f"variants[{index}].policy: {exc}") from None
        return SplitTest(experiment, policies)

    def start(self, test: SplitTest) -> None:
        """Run a prepared test (ValueError if its name was taken since it was prepared); each
        variant's rules are its definition's, made into `Rule`s once here."""
        experiment = test.experiment
        if experiment.name in self.tests:
            raise ValueError(f"name: an experiment {experiment.name!r} exists already")
        self.tests[experiment.name] = test
        for variant in experiment.variants:
            self._rules[experiment.key(variant)] = tuple(Rule.from_json(r) for r in variant.rules)
        self._load_models()
        log.info("experiment %s started: %s", experiment.name, experiment.summary()["variants"])

    def stop(self, name: str) -> Experiment:
        experiment = self.get(name)
        if experiment.running:
            experiment.stopped = time.time()
            self._load_models()
        return experiment

    def promote(self, name: str, variant_name: str) -> tuple[Experiment, Variant, Arm]:
        """Stop the test and say what the winner is; the engine makes it the service's."""
        experiment = self.get(name)
        variant = next((v for v in experiment.variants if v.name == variant_name), None)
        if variant is None:
            names = ", ".join(v.name for v in experiment.variants)
            raise ValueError(f"variant: {variant_name!r} is not one of {names}")
        arm = self._arm(experiment, variant)
        self.stop(name)
        experiment.promoted = variant.name
        return experiment, variant, arm

    def get(self, name: str) -> Experiment:
        test = self.tests.get(name)
        if test is None:
            raise KeyError(name)
        return test.experiment

    def _load_models(self) -> None:
        """Hold the model versions the running tests serve, and only those (a stopped test's
        are never loaded, a restart included)."""
        wanted = {
            v.model_version
            for t in self.tests.values()
            if t.experiment.running
            for v in t.experiment.variants
            if v.model_version is not None
        }
        for version in [v for v in self._models if v not in wanted]:
            del self._models[version]
        for version in wanted - self._models.keys():
            self._models[version] = ServingModel(ModelArtifact.load(self.model_dir, version))
        self._relink()

    # --- serving --------------------------------------------------------------------------------
    def arm_for(self, user_id: str, placement: str) -> Arm | None:
        """The arm of the first running test that covers this placement, if any."""
        for experiment in self._running:
            if experiment.applies_to(placement):
                return self._arms[experiment.key(experiment.variant_of(user_id))]
        return None

    def _arm(self, experiment: Experiment, variant: Variant) -> Arm:
        key = experiment.key(variant)
        model = None if variant.model_version is None else self._models.get(variant.model_version)
        policy = self.tests[experiment.name].policies[variant.name]
        return Arm(experiment.name, variant.name, key, policy, model, self._rules.get(key, ()))

    def _relink(self) -> None:
        """Kept, not derived per call, since the clock moves and a test is looked up on every
        request: `learners`, every arm's policy by its key (who learns from an impression a
        test served, stopped tests included); the running tests and their arms."""
        self.learners: dict[str, Policy] = {
            key: p  # type: ignore[misc]
            for t in self.tests.values()
            for key, p in t.arms.items()
        }
        self._running = [t.experiment for t in self.tests.values() if t.experiment.running]
        self._arms = {
            experiment.key(v): self._arm(experiment, v)
            for experiment in self._running
            for v in experiment.variants
        }

    def observe(self, closed: ClosedImpression) -> None:
        if closed.variant is None:
            return
        test = self.tests.get(closed.variant.split("/", 1)[0])
        if test is not None:
            test.observe(closed)

    def adopt(self, old: Policy, new: Policy) -> None:
        """After a promotion: arms that served with the service's policy now serve the new one."""
        for test in self.tests.values():
            for variant in test.experiment.variants:
                if variant.policy is None and test.policies[variant.name] is old:
                    test.policies[variant.name] = new
        self._relink()

    # --- snapshots ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            name: {
                "experiment": test.experiment.state_dict(),
                "policies": {  # the variants with a policy of their own
                    v.name: test.policies[v.name].state_dict()
                    for v in sorted(test.experiment.variants, key=lambda v: v.name)
                    if v.policy is not None
                },
                "preview": self.previews.get(name),
            }
            for name, test in self.tests.items()
        }

    def load_state_dict(self, state: Mapping[str, Any], default: Policy) -> None:
        for name, saved in state.items():
            experiment = Experiment.from_state(saved["experiment"])
            older = saved.get("rules", {})  # snapshots from before the variants kept their rules
            for variant in experiment.variants:
                variant.rules = variant.rules or list(older.get(variant.name, []))
            try:
                test = self.prepare(experiment, default)
            except ValueError as exc:  # e.g. its model version was pruned since
                log.warning("experiment %s not restored: %s", name, exc)
                continue
            for variant, policy_state in saved["policies"].items():
                test.policies[variant].load_state_dict(policy_state)
            self.start(test)
            if saved.get("preview") is not None:
                self.previews[name] = saved["preview"]

    # --- the preview ------------------------------------------------------------------------------
    def preview(
        self,
        load: Callable[[], BanditLog],
        experiment: Experiment,
        default: Policy,
        paths: int = 0,
    ) -> dict[str, Any]:
        """Each variant's value estimated off-policy on the recent impression log (`load`
        reads it), before any traffic: reward per shown slot and per impression, SNIPS and DR
        with their 95 % bootstrap intervals (`paths` ≥ 2: widened to hold the spread of that
        many replays on resampled logs, the learning path's). Only the policy is previewed: a
        variant's model version and rules change the candidates the log holds, which no log
        can answer for."""
        try:
            logged = load()
        except EquilibraError as exc:
            return {"error": str(exc)}
        specs = [variant.policy or default.spec for variant in experiment.variants]
        reports = estimates(logged, specs, paths)  # the control and the variants: one run
        impressions, per_impression = np.unique(logged.clusters, return_inverse=True)
        slots = len(logged) / max(len(impressions), 1)
        sums = np.bincount(per_impression, weights=logged.reward)
        out: dict[str, Any] = {"impressions": len(impressions), "paths": paths}
        for variant in experiment.variants:
            spec = variant.policy or default.spec
            report = reports[spec]
            if isinstance(report, str):
                out[variant.name] = {"policy": spec, "error": report}
                continue
            found = report["estimates"]
            # Where the live value over as many impressions as the log holds (this variant's
            # share of them) should fall: the interval widened by the live run's own noise.
            horizon = max(int(len(impressions) * variant.share), 1)
            per_slot = {
                k: {
                    **found[k],  # type: ignore[index,dict-item]
                    "prediction": prediction_interval(
                        found[k]["value"],
                        found[k]["ci"],
                        sums,
                        slots,
                        horizon,  # type: ignore[index]
                    ),
                    "horizon_impressions": horizon,
                }
                for k in ("snips", "dr")
                if k in found  # type: ignore[operator]
            }
            out[variant.name] = {
                "policy": spec,
                "per_slot": per_slot,
                "per_impression": {
                    k: {
                        "value": found[k]["value"] * slots,  # type: ignore[index]
                        "ci": [c * slots for c in found[k]["ci"]],  # type: ignore[index]
                    }
                    for k in ("snips", "dr")
                    if k in found  # type: ignore[operator]
                },
                "previewed": "policy only"
                if variant.model_version is not None or self._rules.get(experiment.key(variant))
                else "all of it",
            }
        return out
