"""A trained model as a self-contained directory, published into a versioned model folder.

`equilibra fit` publishes one; `equilibra recommend` (and the service) reads the current one and
answers in external ids. A model folder holds numbered versions and a pointer to the current::

    ROOT/CURRENT             the current version's folder name, e.g. v000003
    ROOT/v000003/            one artifact (below); older versions are kept for rollback
    ROOT/.incoming-…/        a version being written (never read)

Publishing writes the whole artifact into a temporary folder, renames it into place (atomic on
one filesystem) and then replaces CURRENT (atomic too): a reader sees the old version or the new
one, never half of one. `model_version` is the version's number: monotonic per model folder.

One artifact (format version 1)::

    equilibra.json     algorithm, parameters, data summary, validation scores, model_version
    users.npy          external user ids in dense order (unicode array, no pickle)
    items.npy          external item ids in dense order
    type_flags.npz     users × items bit flags of the event types seen in training
    popularity.npy     distinct users per item (the cold-user fallback)
    unavailable.npy    dense indices of items marked `available=false`: never recommended
    model/             the Recommender's own artifact
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from equilibra.data.interactions import IdMap, Interactions, cells_with_types
from equilibra.domain import CONVERSION_TYPES, EVENT_TYPES
from equilibra.errors import EquilibraError
from equilibra.models.base import Recommender, top_k
from equilibra.rank.coldstart import ColdStart

FORMAT_VERSION = 1
EXCLUDE_CHOICES = ("interacted", "converted", "none")
CURRENT = "CURRENT"
VERSION_NAME = re.compile(r"^v(\d{6,})$")
DEFAULT_KEEP = 5  # versions kept for rollback
# Per batch of users: at most this many (user, unavailable item) exclusion cells.
UNAVAILABLE_CELLS = 5_000_000


@dataclass
class ModelArtifact:
    model: Recommender
    users: IdMap
    items: IdMap
    type_flags: sp.csr_matrix
    popularity: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    cold: ColdStart | None = None
    unavailable: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def model_version(self) -> int | None:
        version = self.info.get("model_version")
        return None if version is None else int(version)

    @classmethod
    def from_training(
        cls,
        model: Recommender,
        interactions: Interactions,
        info: dict[str, Any] | None = None,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
    ) -> ModelArtifact:
        unavailable = np.zeros(0, dtype=np.int64)
        if items is not None and "available" in items:
            off = items.loc[~items["available"].astype(bool), "item_id"].astype(str).to_numpy()
            dense = interactions.items.to_dense(off)
            unavailable = np.unique(dense[dense >= 0]).astype(np.int64)
        return cls(
            model=model,
            users=interactions.users,
            items=interactions.items,
            type_flags=interactions.type_flags.tocsr(),
            popularity=interactions.item_popularity().astype(np.float64),
            info=dict(info or {}),
            cold=ColdStart.fit(interactions, items, users),
            unavailable=unavailable,
        )

    # --- persistence ----------------------------------------------------------------------------
    def save(self, folder: Path | str) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "users.npy", self.users.ids.astype(str), allow_pickle=False)
        np.save(folder / "items.npy", self.items.ids.astype(str), allow_pickle=False)
        sp.save_npz(folder / "type_flags.npz", self.type_flags)
        np.save(folder / "popularity.npy", self.popularity, allow_pickle=False)
        np.save(folder / "unavailable.npy", self.unavailable.astype(np.int64), allow_pickle=False)
        self.model.save(folder / "model")
        if self.cold is not None:
            self.cold.save(folder / "coldstart")
        meta = {
            "format_version": FORMAT_VERSION,
            "algorithm": self.model.name,
            "params": self.model.get_params(),
            "saved_at": time.time(),
            "users": len(self.users),
            "items": len(self.items),
            **self.info,
        }
        (folder / "equilibra.json").write_text(json.dumps(meta, indent=2, default=str))
        return folder

    def publish(self, root: Path | str, keep: int = DEFAULT_KEEP) -> int:
        """Write this artifact as the next version of model folder `root` and make it current.

        Returns its `model_version`. Versions beyond the newest `keep` are removed (never the
        current one)."""
        if keep < 1:
            raise EquilibraError("keep: at least one version")
        root = Path(root)
        if (root / "equilibra.json").exists():
            raise EquilibraError(
                f"model: {root} holds a single unversioned model; publish into a new folder"
            )
        root.mkdir(parents=True, exist_ok=True)
        incoming = root / f".incoming-{uuid.uuid4().hex}"
        try:
            for _attempt in range(100):
                # Numbers already taken, complete or not: a half-removed or crashed version
                # folder keeps its number.
                version = max(_taken(root), default=0) + 1
                self.info["model_version"] = version
                self.save(incoming)
                try:
                    # A rename onto an existing folder fails: a concurrent fit took the number.
                    os.rename(incoming, root / _version_name(version))
                    break
                except OSError:
                    if not (root / _version_name(version)).exists():
                        raise
            else:
                raise EquilibraError(f"model: could not take a version number in {root}")
        finally:
            if incoming.exists():
                shutil.rmtree(incoming, ignore_errors=True)
        _point(root, version)
        for old in versions(root)[:-keep]:
            if old != version:
                shutil.rmtree(root / _version_name(old), ignore_errors=True)
        return version

    @classmethod
    def load(cls, folder: Path | str, version: int | None = None) -> ModelArtifact:
        """A model folder's current version (or `version`), or a single artifact folder."""
        folder = Path(folder)
        if version is None and (folder / CURRENT).exists():
            # The current version can be pruned while it is read, when newer ones are
            # published faster than it loads (`keep`): read whichever is current then.
            for _ in range(3):
                path = folder / _version_name(current(folder))
                try:
                    return cls._load_folder(path)
                except (FileNotFoundError, EquilibraError):
                    if path.exists():  # not pruned: a real error
                        raise
        if (folder / CURRENT).exists() or version is not None:
            folder = folder / _version_name(version if version is not None else current(folder))
        return cls._load_folder(folder)

    @classmethod
    def _load_folder(cls, folder: Path) -> ModelArtifact:
        meta_path = folder / "equilibra.json"
        if not meta_path.exists():
            raise EquilibraError(f"model: {folder} is not a model directory (no equilibra.json)")
        info = json.loads(meta_path.read_text())
        if info.get("format_version") != FORMAT_VERSION:
            raise EquilibraError(
                f"model: format {info.get('format_version')} is not "
                f"{FORMAT_VERSION}; refit with this version"
            )
        return cls(
            model=Recommender.load(folder / "model"),
            users=IdMap(np.load(folder / "users.npy").astype(object)),
            items=IdMap(np.load(folder / "items.npy").astype(object)),
            type_flags=sp.load_npz(folder / "type_flags.npz").tocsr(),
            popularity=np.load(folder / "popularity.npy"),
            info=info,
            cold=ColdStart.load(folder / "coldstart")
            if (folder / "coldstart" / "coldstart.json").exists()
            else None,
            unavailable=np.load(folder / "unavailable.npy")
            if (folder / "unavailable.npy").exists()
            else np.zeros(0, dtype=np.int64),
        )

    # --- answering ------------------------------------------------------------------------------
    def exclusion(self, exclude: str) -> sp.csr_matrix | None:
        if exclude not in EXCLUDE_CHOICES:
            raise EquilibraError(
                f"exclude: expected one of {', '.join(EXCLUDE_CHOICES)}, not {exclude!r}"
            )
        if exclude == "none":
            return None
        types = EVENT_TYPES if exclude == "interacted" else CONVERSION_TYPES
        return cells_with_types(self.type_flags, types)

    def recommend(
        self,
        user_ids: pd.Series | np.ndarray | list[str],
        k: int,
        exclude: str = "interacted",
        context: dict[str, Any] | None = None,
        attributes: dict[str, dict[str, Any]] | None = None,
    ) -> pd.DataFrame:
        """Top-k per external user id -> `user_id, rank, item_id, score`.

        Users the model does not know get the cold-start ranking: trending items, narrowed by
        `context` (e.g. {"category": "Shoes"}) and by their `attributes` (user id -> {attr: v}).
        """
        user_ids = pd.Series(user_ids, dtype=object).astype(str)
        dense = self.users.to_dense(user_ids.to_numpy())
        banned = self.exclusion(exclude)
        known = dense >= 0
        items = np.full((len(dense), k), -1, dtype=np.int64)
        scores = np.full((len(dense), k), -np.inf)
        if known.any():
            items[known], scores[known] = self._recommend_known(dense[known], k, banned)
        answers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for row in np.flatnonzero(~known):
            attrs = (attributes or {}).get(user_ids.iloc[row], {})
            key = json.dumps(attrs, sort_keys=True, default=str)
            if key not in answers:
                ranking = (
                    self.cold.scores(context, attrs)
                    if self.cold is not None
                    else self.popularity.astype(float)
                ).copy()
                ranking[self.unavailable] = -np.inf
                found, values = top_k(ranking[None, :], k)
                answers[key] = (found[0], values[0])
            items[row], scores[row] = answers[key]
        rows = np.repeat(np.arange(len(dense)), k)
        ranks = np.tile(np.arange(1, k + 1), len(dense))
        flat_items = items.ravel()
        valid = flat_items >= 0
        return pd.DataFrame(
            {
                "user_id": user_ids.to_numpy()[rows[valid]],
                "rank": ranks[valid],
                "item_id": self.items.to_external(flat_items[valid]),
                "score": np.round(scores.ravel()[valid], 6),
            }
        )

    def _recommend_known(
        self, users: np.ndarray, k: int, banned: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The model's lists, with unavailable items excluded for everyone."""
        if len(self.unavailable) == 0:
            return self.model.recommend(users, k, exclude=banned)
        n_users, n_items = len(self.users), len(self.items)
        batch = max(1, UNAVAILABLE_CELLS // len(self.unavailable))
        out_items = np.empty((len(users), k), dtype=np.int64)
        out_scores = np.empty((len(users), k))
        for lo in range(0, len(users), batch):
            rows = users[lo : lo + batch]
            extra = sp.csr_matrix(
                (
                    np.ones(len(rows) * len(self.unavailable), dtype=bool),
                    (np.repeat(rows, len(self.unavailable)), np.tile(self.unavailable, len(rows))),
                ),
                shape=(n_users, n_items),
            )
            if banned is not None:
                # Only the batch's rows of `banned`: a row selector keeps the cost to them.
                pick = sp.csr_matrix(
                    (np.ones(len(rows), dtype=bool), (rows, rows)), shape=(n_users, n_users)
                )
                extra = (extra + pick @ banned).astype(bool).tocsr()
            found = self.model.recommend(rows, k, exclude=extra)
            out_items[lo : lo + batch], out_scores[lo : lo + batch] = found
        return out_items, out_scores


def _version_name(version: int) -> str:
    return f"v{version:06d}"


def versions(root: Path | str) -> list[int]:
    """The complete versions in a model folder, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = VERSION_NAME.match(entry.name)
        if match and (entry / "equilibra.json").exists():
            found.append(int(match.group(1)))
    return sorted(found)


def version_info(root: Path | str, version: int) -> dict[str, Any]:
    """The metadata (`equilibra.json`) of one kept version, without loading the model."""
    return json.loads((Path(root) / _version_name(version) / "equilibra.json").read_text())  # type: ignore[no-any-return]


def _taken(root: Path) -> list[int]:
    """Every version number a folder name holds, whether or not the version is complete."""
    return [
        int(match.group(1))
        for entry in root.iterdir()
        if (match := VERSION_NAME.match(entry.name)) is not None
    ]


def current(root: Path | str) -> int:
    """The model folder's current version."""
    root = Path(root)
    pointer = root / CURRENT
    if not pointer.exists():
        raise EquilibraError(f"model: {root} has no current version (no {CURRENT} file)")
    match = VERSION_NAME.match(pointer.read_text().strip())
    if not match:
        raise EquilibraError(f"model: {pointer} does not name a version")
    return int(match.group(1))


def _point(root: Path, version: int) -> None:
    """Make `version` current: write the pointer beside it, then rename over the old one."""
    staged = root / f".{CURRENT}-{uuid.uuid4().hex}"
    staged.write_text(_version_name(version) + "\n")
    os.replace(staged, root / CURRENT)


def rollback(root: Path | str, version: int | None = None) -> int:
    """Make an older version current again (by default the one before the current)."""
    root = Path(root)
    kept = versions(root)
    now = current(root)
    if version is None:
        older = [v for v in kept if v < now]
        if not older:
            raise EquilibraError(f"model: {root} keeps no version older than {now}")
        version = older[-1]
    if version not in kept:
        raise EquilibraError(
            f"model: version {version} is not in {root} (kept: {', '.join(map(str, kept))})"
        )
    _point(root, version)
    return version
