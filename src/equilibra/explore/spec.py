"""Policy specs: the strings `EQUILIBRA_POLICY`, `equilibra ope` and `equilibra simulate` take.

`name[:arg,…]` where each arg is a number (the policy's main parameters, in order) or
`key=value` (any keyword of the policy): `greedy`, `egreedy:0.1`, `softmax:0.2`, `ucb:1`,
`thompson`, `thompson:discount=0.999`, `linucb:0.5`, `lints:0.1`, `gorse:0.1,0.05`, `uniform`;
`learn=false` freezes any of them in its prior state (a fixed policy).
"""

from __future__ import annotations

import json
from pathlib import Path

from equilibra.errors import EquilibraError
from equilibra.explore.adaptive import Adaptive
from equilibra.explore.policies import (
    UCB,
    EpsilonGreedy,
    GorseRatios,
    Greedy,
    LinearThompson,
    LinUCB,
    Policy,
    Softmax,
    Thompson,
    Uniform,
)

POLICIES: dict[str, type[Policy]] = {
    "greedy": Greedy,
    "egreedy": EpsilonGreedy,
    "softmax": Softmax,
    "ucb": UCB,
    "thompson": Thompson,
    "linucb": LinUCB,
    "lints": LinearThompson,
    "gorse": GorseRatios,
    "uniform": Uniform,
    "adaptive": Adaptive,
}
POSITIONAL: dict[str, tuple[str, ...]] = {
    "egreedy": ("epsilon",),
    "softmax": ("temperature",),
    "ucb": ("c",),
    "linucb": ("alpha",),
    "lints": ("v",),
    "gorse": ("popular", "latest"),
}
INTEGER_OPTIONS = {"samples", "pool_size", "pool"}
BOOLEAN_OPTIONS = {"by_segment", "learn", "pooled", "tune_strength"}
STRING_OPTIONS = {"belief", "draw"}


def _value(key: str, text: str) -> object:
    if key in STRING_OPTIONS:
        return text
    if key in BOOLEAN_OPTIONS:
        if text.lower() not in {"true", "false", "1", "0"}:
            raise EquilibraError(f"policy {key}: expected true or false, got {text!r}")
        return text.lower() in {"true", "1"}
    try:
        return int(text) if key in INTEGER_OPTIONS else float(text)
    except ValueError:
        raise EquilibraError(f"policy {key}: expected a number, got {text!r}") from None


def parse_policy(spec: str) -> Policy:
    """Build a fresh policy from its spec; a bad spec is a one-line `EquilibraError`."""
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in POLICIES:
        known = ", ".join(sorted(POLICIES))
        raise EquilibraError(f"policy: unknown name {name!r} (known: {known})")
    kwargs: dict[str, object] = {}
    positional = list(POSITIONAL.get(name, ()))
    for arg in filter(None, (a.strip() for a in rest.split(","))):
        if "=" in arg:
            key, _, text = arg.partition("=")
            key = key.strip()
        elif positional:
            key, text = positional.pop(0), arg
        else:
            raise EquilibraError(f"policy {name}: unexpected argument {arg!r}")
        kwargs[key] = _value(key, text.strip())
    try:
        policy = POLICIES[name](**kwargs)  # type: ignore[arg-type]
    except TypeError as error:
        raise EquilibraError(f"policy {name}: {error}") from None
    except ValueError as error:
        raise EquilibraError(f"policy {name} {error}") from None
    policy.spec = spec.strip()
    return policy


def save_policy(policy: Policy, path: Path) -> None:
    path.write_text(json.dumps(policy.state_dict()))


def load_policy(path: Path) -> Policy:
    """A policy restored from `save_policy`: same spec, same learned state."""
    try:
        state = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise EquilibraError(f"policy state {path}: cannot read ({error})") from None
    policy = parse_policy(str(state["spec"]))
    policy.load_state_dict(state)
    return policy
