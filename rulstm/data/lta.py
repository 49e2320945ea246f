"""Ego4D long-term anticipation data: FHO LTA windows over the project's HDF5 features.

A window (:class:`epic_protocol.ego4d_lta.LTAWindow`) becomes one sample::

    {"features": float32 (T, D), T = N observed actions x S steps, oldest first (past only),
     "verbs": int64 (Z,), "nouns": int64 (Z,)   (-1 in the unannotated test split),
     "id": "<clip_uid>_<action_idx of the last observed action>"}

The feature file is keyed by ``clip_uid`` (features the project extracted from the clip
videos, ``keying: clip``) or by the parent ``video_uid`` (Ego4D's released per-video features
imported with ``rulstm-import ego4d-features``, ``keying: video``); see
:func:`epic_protocol.ego4d_lta.feature_frames` for the frame mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from epic_protocol.ego4d_lta import (
    NUM_FUTURE_ACTIONS,
    NUM_INPUT_ACTIONS,
    STEPS_PER_ACTION,
    LTATaxonomy,
    LTAWindow,
    feature_frames,
    read_lta_windows,
    read_taxonomy,
)
from epic_protocol.features import FeatureStore
from rulstm.data.datamodule import resolve_num_workers

Split = Literal["train", "val", "test"]


class LTADataset(Dataset):
    """Windows read from one feature file (see the module docstring for a sample's layout).

    Raises:
        KeyError: (at construction) a window whose video key is not a complete video of the
            feature file; the message names the file, the key and the window id.
    """

    def __init__(
        self,
        *,
        windows: Sequence[LTAWindow],
        store: FeatureStore,
        keying: Literal["clip", "video"] = "clip",
        steps_per_action: int = STEPS_PER_ACTION,
    ) -> None:
        self.windows = list(windows)
        self.store = store
        self.keying = keying
        self.steps_per_action = steps_per_action
        self.requests = [
            feature_frames(w, w.observed_frames(steps_per_action), keying) for w in self.windows
        ]
        stored = set(store.videos())
        for window, (key, _) in zip(self.windows, self.requests):
            if key not in stored:
                raise KeyError(
                    f"{store.path}: no complete video {key!r} for window {window.id} "
                    f"(keying: {keying}; features keyed by "
                    f"{'clip_uid' if keying == 'clip' else 'video_uid'})"
                )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        features = self.store.lookup_batch([self.requests[i] for i in indices])
        return [
            {
                "features": torch.from_numpy(np.ascontiguousarray(rows)),  # (T, D)
                "verbs": torch.from_numpy(self.windows[i].future_verbs),  # (Z,)
                "nouns": torch.from_numpy(self.windows[i].future_nouns),  # (Z,)
                "id": self.windows[i].id,
            }
            for i, rows in zip(indices, features)
        ]


class LTADataModule(L.LightningDataModule):
    """FHO LTA splits over one HDF5 feature file.

    Args:
        features: the HDF5 feature file (:mod:`epic_protocol.features`).
        taxonomy: ``fho_lta_taxonomy.json`` (class counts; labels are checked against it).
        train, val, test: ``fho_lta_train.json``, ``fho_lta_val.json``,
            ``fho_lta_test_unannotated.json`` (any may be omitted when not used). ``fit``
            reads train and val, ``validate``/``test`` score val, ``predict`` reads
            ``predict_split``.
        keying: ``clip`` (features keyed by clip_uid) or ``video`` (by the parent video_uid).
        num_input_actions: ``N`` observed actions (official: 2; the transformer baseline 4).
        num_future_actions: ``Z`` (the challenge: 20).
        steps_per_action: ``S`` feature steps per observed action.
        predict_split: the split ``predict`` writes ``outputs.json`` for (default ``test``).
        batch_size, num_workers, in_memory: loading (``num_workers: auto`` as for the
            next-action DataModule: :func:`rulstm.data.datamodule.resolve_num_workers`).
    """

    def __init__(
        self,
        *,
        features: str,
        taxonomy: str,
        train: str | None = None,
        val: str | None = None,
        test: str | None = None,
        keying: Literal["clip", "video"] = "clip",
        num_input_actions: int = NUM_INPUT_ACTIONS,
        num_future_actions: int = NUM_FUTURE_ACTIONS,
        steps_per_action: int = STEPS_PER_ACTION,
        predict_split: Split = "test",
        batch_size: int = 32,
        num_workers: int | Literal["auto"] = 0,
        in_memory: bool = False,
    ) -> None:
        super().__init__()
        self.features = features
        self.files: dict[str, str | None] = {"train": train, "val": val, "test": test}
        self.keying = keying
        self.num_input_actions = num_input_actions
        self.num_future_actions = num_future_actions
        self.steps_per_action = steps_per_action
        self.predict_split = predict_split
        self.batch_size, self.in_memory = batch_size, in_memory
        # auto: min(4, usable cores); an int above the usable cores warns once, naming it.
        self.num_workers = resolve_num_workers(num_workers)
        self.taxonomy: LTATaxonomy = read_taxonomy(taxonomy)
        self._store: FeatureStore | None = None
        self._datasets: dict[str, LTADataset] = {}

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            self._store = FeatureStore(self.features, in_memory=self.in_memory)
        return self._store

    @property
    def feat_dim(self) -> int:
        return self.store.dim

    @property
    def num_verbs(self) -> int:
        return self.taxonomy.num_verbs

    @property
    def num_nouns(self) -> int:
        return self.taxonomy.num_nouns

    def windows(self, split: str) -> list[LTAWindow]:
        path = self.files.get(split)
        if not path:
            raise ValueError(f"data.{split} is not set: give the fho_lta_{split}*.json file")
        windows = read_lta_windows(
            path,
            taxonomy=self.taxonomy,
            num_input_actions=self.num_input_actions,
            num_future_actions=self.num_future_actions,
        )
        if not windows:
            raise ValueError(
                f"{path}: no clip has N + Z = {self.num_input_actions} + "
                f"{self.num_future_actions} actions, so there are no windows"
            )
        if split != "test" and not all(w.labelled for w in windows):
            raise ValueError(f"{path}: the {split} split needs verb and noun labels")
        return windows

    def dataset(self, split: str) -> LTADataset:
        if split not in self._datasets:
            self._datasets[split] = LTADataset(
                windows=self.windows(split),
                store=self.store,
                keying=self.keying,
                steps_per_action=self.steps_per_action,
            )
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        needed = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("val",),  # scoring needs labels: the unannotated test split is for predict
            "predict": (self.predict_split,),
        }.get(stage or "", ())
        for split in needed:
            if split == "val" and stage == "fit" and not self.files["val"]:
                continue
            self.dataset(split)

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", shuffle=False) if self.files["val"] else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, shuffle=False)

    def teardown(self, stage: str | None = None) -> None:
        if self._store is not None:
            self._store.close()
