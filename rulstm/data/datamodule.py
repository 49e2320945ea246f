"""Datasets and the LightningDataModule: annotations + sampling + per-modality feature stores."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypedDict

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from epic_protocol import sampling
from epic_protocol.annotations import (
    ActionVocabulary,
    Segment,
    read_actions_csv,
    read_annotations,
    with_actions,
)
from epic_protocol.features import BeyondEnd, FeatureStore
from epic_protocol.sampling import Task
from rulstm.resources import resolve_path

log = logging.getLogger(__name__)


class AnticipationBatch(TypedDict):
    """What every dataloader yields (after default collation)."""

    features: dict[str, torch.Tensor]  # modality -> (B, T, D) float32
    action: torch.Tensor  # (B,) long, -1 when unknown (test split, or pair not in vocabulary)
    verb: torch.Tensor  # (B,) long, -1 when unknown
    noun: torch.Tensor  # (B,) long, -1 when unknown
    valid: torch.Tensor  # (B,) bool; False = a sample the reference discards (zero features)
    uid: list[str]
    index: torch.Tensor  # (B,) long, the segment's position in its split (unique per split)


@dataclass(frozen=True, slots=True)
class Sample:
    """One segment and the frames its time steps read (``None`` if the reference drops it)."""

    segment: Segment
    frames: np.ndarray | None


def sample_frames(
    segment: Segment, *, task: Task, fps: float, alpha: float, steps: int
) -> np.ndarray | None:
    """The frames a sample of ``segment`` reads (see :func:`epic_protocol.sampling.sample_frames`)."""
    return sampling.sample_frames(
        segment.start_frame, segment.end_frame, task=task, fps=fps, alpha=alpha, steps=steps
    )


#: How many uids messages and reports list.
FIRST_UIDS = 5

#: The most loader worker processes ``num_workers: auto`` starts (HDF5 reads are cheap).
MAX_AUTO_WORKERS = 4


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's or
    ``taskset``'s limit), else the machine's count; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS / Windows: no affinity mask
        return max(1, os.cpu_count() or 1)


def resolve_num_workers(num_workers: int | Literal["auto"]) -> int:
    """``"auto"`` -> ``min(4, usable CPU cores)``: no more workers than cores (PyTorch warns
    that more "might freeze" the machine), and no more than the reads need; an int is kept,
    with one warning when it is more than the usable cores (PyTorch's own warning, printed
    once per loader, is filtered by ``rulstm``: :data:`rulstm.cli.QUIET`).

    Raises:
        ValueError: neither ``"auto"`` nor an int >= 0.
    """
    if num_workers == "auto":
        return min(MAX_AUTO_WORKERS, usable_cpus())
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"data.num_workers must be 'auto' or an int >= 0, got {num_workers!r}")
    cpus = usable_cpus()
    if num_workers > cpus:
        warnings.warn(
            f"data.num_workers is {num_workers} but this process may use {cpus} CPU "
            f"core{'s' if cpus != 1 else ''}: more loader processes than cores slow the run "
            f"down (or freeze the machine); set data.num_workers auto "
            f"({min(MAX_AUTO_WORKERS, cpus)} here) or at most {cpus}",
            UserWarning,
            stacklevel=2,
        )
    return num_workers


def outside_vocabulary(segments: Iterable[Segment]) -> list[str]:
    """Uids of labelled segments whose (verb, noun) pair is not an action (action -1)."""
    return [s.uid for s in segments if s.labelled and s.action is not None and s.action < 0]


def _label(value: int | None) -> int:
    return -1 if value is None else int(value)


class AnticipationDataset(Dataset):
    """Features at the sampled frames of each segment, for every modality.

    With ``keep_dropped=False`` (training) samples the reference discards are removed; with
    ``keep_dropped=True`` (validation/test) they stay, with zero features and
    ``valid=False``, so that evaluation can score them as zeros like the reference.

    Every video's frames are checked against each store when the dataset is built (see
    :meth:`FeatureStore.check_frames` and :meth:`FeatureStore.check_finite`), so a video
    missing from a file, a frame past a video's end, or a feature vector holding NaN or inf
    fails here, in the main process, with the file, video and frame named, not in a
    DataLoader worker in the middle of an epoch (or as NaN scores naming nothing).

    Raises:
        MissingFeaturesError: a video is missing or incomplete, or a sampled frame lies past
            its end (unless the store clamps: ``beyond_end="clamp"``).
        NonFiniteFeatureError: a video's features hold NaN or inf (files made elsewhere;
            this project's writers refuse them).
    """

    def __init__(
        self,
        *,
        segments: Sequence[Segment],
        stores: Mapping[str, FeatureStore],
        task: Task = "anticipation",
        fps: float = 30.0,
        alpha: float = 0.25,
        steps: int = 14,
        keep_dropped: bool = False,
        name: str = "dataset",
    ) -> None:
        if not stores:
            raise ValueError("at least one modality feature store is needed")
        self.stores = dict(stores)
        self.steps = steps
        samples = [
            Sample(s, sample_frames(s, task=task, fps=fps, alpha=alpha, steps=steps))
            for s in segments
        ]
        dropped = sum(sample.frames is None for sample in samples)
        if dropped:
            action = "kept as invalid (scored as zeros)" if keep_dropped else "dropped"
            log.info(
                "%s: %d of %d segments start too early to sample: %s",
                name,
                dropped,
                len(samples),
                action,
            )
        self.samples = samples if keep_dropped else [s for s in samples if s.frames is not None]
        self.num_dropped = dropped
        outside = outside_vocabulary(s.segment for s in self.samples)
        self.outside_vocabulary = outside
        if outside:
            role = (
                "ignored by the loss"
                if not keep_dropped
                else "scored as misses by the action metrics (verb and noun as usual)"
            )
            log.warning(
                "%s: %d of %d segments have a (verb, noun) pair that is not an action of the "
                "vocabulary, %s; first: %s",
                name,
                len(outside),
                len(self.samples),
                role,
                ", ".join(outside[:FIRST_UIDS]),
            )
        self._check_videos()

    def _check_videos(self) -> None:
        highest: dict[str, int] = {}
        for sample in self.samples:
            if sample.frames is not None and len(sample.frames):
                video = sample.segment.video_id
                highest[video] = max(highest.get(video, 0), int(sample.frames.max()))
        for store in self.stores.values():
            try:
                for video, frame in highest.items():
                    store.check_frames(video, np.array([frame]))
                    store.check_finite(video)  # files made elsewhere: read in blocks
            finally:
                store.close()  # workers open their own handles

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """A whole batch at once (the DataLoader calls this when it exists): each modality
        reads the rows of all the batch's samples of one video together
        (``FeatureStore.lookup_batch``), not one read per sample."""
        samples = [self.samples[index] for index in indices]
        readable = [i for i, sample in enumerate(samples) if sample.frames is not None]
        features: list[dict[str, torch.Tensor]] = [{} for _ in samples]
        for modality, store in self.stores.items():
            requests = [(samples[i].segment.video_id, samples[i].frames) for i in readable]
            for i, rows in zip(readable, store.lookup_batch(requests), strict=True):
                features[i][modality] = torch.from_numpy(rows)  # (T, D) float32
            for i, sample in enumerate(samples):
                if sample.frames is None:
                    features[i][modality] = torch.zeros(self.steps, store.dim)
        return [
            {
                "features": features[i],
                "action": _label(sample.segment.action),
                "verb": _label(sample.segment.verb),
                "noun": _label(sample.segment.noun),
                "valid": sample.frames is not None,
                "uid": sample.segment.uid,
                "index": index,
            }
            for i, (index, sample) in enumerate(zip(indices, samples, strict=True))
        ]


class AnticipationDataModule(L.LightningDataModule):
    """EPIC-style splits (RU-LSTM CSVs or original EPIC CSVs) over HDF5 feature files.

    Args:
        features: modality -> HDF5 file, e.g. ``{"rgb": "data/ek55/rgb.h5"}``; the order is
            the modality order the fusion model sees.
        train_annotations / val_annotations / test_annotations / predict_annotations: split
            files; ``builtin:ek55/training.csv`` names a shipped file.
        actions: the action vocabulary (``actions.csv``); built from the training split when
            omitted.
        video_info: EPIC video-info CSV, only for EPIC CSVs converted from native frames.
        task: ``anticipation`` (frames before the action start) or ``early_recognition``
            (progressive observations inside the action).
        fps, alpha, encoding_steps, anticipation_steps: the sampling protocol (reference:
            30 fps, 0.25 s, 6 + 8 steps).
        early_recognition_steps: observations inside the action (reference: 8).
        batch_size: samples per batch.
        num_workers: loader worker processes; ``auto`` (default) starts ``min(4, usable CPU
            cores)`` (:func:`resolve_num_workers`), 0 reads in the main process.
        in_memory: hold each modality in RAM (per worker process) for fast epochs.
        beyond_end: what a sampled frame past a video's end reads: ``error`` (default) raises
            :class:`MissingFeaturesError` naming the file, video, frame and last stored frame;
            ``clamp`` reads the last stored frame, with one warning per video.
    """

    def __init__(
        self,
        *,
        features: dict[str, str],
        train_annotations: str | None = None,
        val_annotations: str | None = None,
        test_annotations: str | None = None,
        predict_annotations: str | None = None,
        actions: str | None = None,
        video_info: str | None = None,
        task: Task = "anticipation",
        fps: float = 30.0,
        alpha: float = 0.25,
        encoding_steps: int = 6,
        anticipation_steps: int = 8,
        early_recognition_steps: int = 8,
        batch_size: int = 128,
        num_workers: int | Literal["auto"] = "auto",
        in_memory: bool = False,
        pin_memory: bool = False,
        beyond_end: BeyondEnd = "error",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if not features:
            raise ValueError("features: give at least one modality, e.g. {'rgb': 'rgb.h5'}")
        self.feature_paths = {m: resolve_path(p) for m, p in features.items()}
        self.split_paths = {
            split: resolve_path(path) if path is not None else None
            for split, path in (
                ("train", train_annotations),
                ("val", val_annotations),
                ("test", test_annotations),
                ("predict", predict_annotations),
            )
        }
        self.actions_path = resolve_path(actions) if actions is not None else None
        self.video_info = resolve_path(video_info) if video_info is not None else None
        self.task: Task = task
        self.fps, self.alpha = fps, alpha
        self.encoding_steps, self.anticipation_steps = encoding_steps, anticipation_steps
        self.steps = (
            encoding_steps + anticipation_steps
            if task == "anticipation"
            else early_recognition_steps
        )
        self.batch_size, self.num_workers = batch_size, resolve_num_workers(num_workers)
        self.in_memory, self.pin_memory = in_memory, pin_memory
        # Metadata only: files are opened lazily in each worker.
        self.stores = {
            modality: FeatureStore(
                path, in_memory=in_memory, expected_fps=fps, beyond_end=beyond_end
            )
            for modality, path in self.feature_paths.items()
        }
        self._vocabulary: ActionVocabulary | None = None
        self._datasets: dict[str, AnticipationDataset] = {}

    @property
    def feature_dims(self) -> dict[str, int]:
        return {modality: store.dim for modality, store in self.stores.items()}

    @property
    def vocabulary(self) -> ActionVocabulary:
        if self._vocabulary is None:
            if self.actions_path is not None:
                self._vocabulary = read_actions_csv(self.actions_path)
            else:
                train = self.split_paths["train"]
                if train is None:
                    raise ValueError(
                        "no action vocabulary: pass actions=<actions.csv> or train_annotations"
                    )
                segments = read_annotations(train, video_fps=self.video_info, fps=self.fps)
                try:
                    self._vocabulary = ActionVocabulary.from_segments(segments)
                except ValueError as error:
                    raise ValueError(f"{train}: {error}") from None
        return self._vocabulary

    @property
    def num_actions(self) -> int:
        return self.vocabulary.num_actions

    def segments(self, split: str) -> list[Segment]:
        path = self.split_paths[split]
        if path is None:
            raise ValueError(f"no {split} annotations were configured ({split}_annotations)")
        segments = read_annotations(
            path, video_fps=self.video_info, fps=self.fps, vocabulary=self.vocabulary
        )
        # EPIC CSVs read before the vocabulary existed carry action=None.
        if any(s.labelled and s.action is None for s in segments):
            segments = with_actions(segments, self.vocabulary)
        return segments

    def dataset(self, split: str) -> AnticipationDataset:
        if split not in self._datasets:
            self._datasets[split] = AnticipationDataset(
                segments=self.segments(split),
                stores=self.stores,
                task=self.task,
                fps=self.fps,
                alpha=self.alpha,
                steps=self.steps,
                keep_dropped=split != "train",
                name=f"{split} ({self.split_paths[split]})",
            )
        return self._datasets[split]

    def setup(self, stage: str | None = None) -> None:
        splits = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
            None: tuple(s for s, p in self.split_paths.items() if p is not None),
        }[stage]
        for split in splits:
            if split == "val" and self.split_paths["val"] is None:
                continue  # validation is optional; the other splits fail clearly if missing
            self.dataset(split)

    def _loader(self, split: str, *, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.split_paths["val"] is None:
            return []
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)

    def teardown(self, stage: str | None = None) -> None:
        for store in self.stores.values():
            store.close()
