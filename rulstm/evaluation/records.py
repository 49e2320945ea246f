"""Per-segment result records and how they are collected across processes.

Evaluation and challenge-file writing both accumulate one record per test/predict batch, gather
the records of every process, concatenate them and drop the repeats that Lightning's
``DistributedSampler`` pads the split with. That logic lives here once:
:func:`first_occurrences` (the de-duplication rule, also used by the per-split torchmetrics
state of validation), :class:`SegmentRecords` (a dataclass of ``uids`` plus per-segment
arrays, ``(N, ...)``) and :func:`gather_records`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch

R = TypeVar("R", bound="SegmentRecords")
log = logging.getLogger(__name__)


def _take(value: Any, mask: np.ndarray) -> Any:
    if isinstance(value, dict):
        return {key: _take(item, mask) for key, item in value.items()}
    if isinstance(value, list):
        return [item for item, keep in zip(value, mask) if keep]
    return value[mask]


def _join(values: Sequence[Any]) -> Any:
    first = values[0]
    if isinstance(first, dict):
        return {key: _join([v[key] for v in values]) for key in first}
    if isinstance(first, list):
        return [item for v in values for item in v]
    return np.concatenate(values)


def first_occurrences(keys: np.ndarray | torch.Tensor | Sequence[Any]) -> np.ndarray:
    """Positions (ascending) of the first occurrence of each key of ``keys`` (N,): the
    de-duplication rule for the repeats a ``DistributedSampler`` pads a split with. Keys are
    segment uids (strings) or segment indices (integers, a tensor on any device)."""
    if isinstance(keys, torch.Tensor):
        keys = keys.detach().cpu().numpy()
    values = np.asarray(keys) if not isinstance(keys, np.ndarray) else keys
    if values.dtype.kind in "OUS":
        values = values.astype(object)
    _, first = np.unique(values, return_index=True)
    return np.sort(first)


class SegmentRecords:
    """Mixin for dataclasses whose fields are per-segment: ``uids`` (a list of N ids) and
    arrays (or dicts of arrays) with N rows. Gives selection, de-duplication by uid and
    concatenation, generic over the fields."""

    uids: list[str]

    def __len__(self) -> int:
        return len(self.uids)

    def select(self: R, mask: np.ndarray) -> R:
        """The records where ``mask`` (N,) is true, in order."""
        mask = np.asarray(mask, dtype=bool)
        values = {f.name: _take(getattr(self, f.name), mask) for f in dataclasses.fields(self)}
        return type(self)(**values)

    def deduplicated(self: R) -> R:
        """Keep the first occurrence of each uid (DistributedSampler pads with repeats)."""
        first = first_occurrences(np.asarray(self.uids, dtype=object))
        if len(first) == len(self.uids):
            return self
        mask = np.zeros(len(self.uids), dtype=bool)
        mask[first] = True
        return self.select(mask)

    @classmethod
    def concatenate(cls: type[R], parts: Sequence[R]) -> R:
        """One record of all ``parts``, in order (empty parts skipped)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            raise ValueError(f"no {cls.__name__} to concatenate")
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{name: _join([getattr(p, name) for p in parts]) for name in names})


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (just ``[obj]`` without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, obj)
        return gathered
    return [obj]


def gather_records(parts: Sequence[R]) -> R | None:
    """The records of every process, concatenated, each uid once; ``None`` when empty."""
    everything = [part for rank_parts in gather_objects(list(parts)) for part in rank_parts]
    everything = [part for part in everything if len(part)]
    if not everything:
        return None
    return type(everything[0]).concatenate(everything).deduplicated()


def split_size(dataloaders: Any) -> int | None:
    """Segments in the split(s) a trainer stage iterates (``None`` when unknown)."""
    loaders = dataloaders if isinstance(dataloaders, (list, tuple)) else [dataloaders]
    total = 0
    for loader in loaders:
        try:
            total += len(loader.dataset)
        except (AttributeError, TypeError):
            return None
    return total if loaders else None


def is_partial(trainer: Any, stage: str, num_segments: int) -> tuple[bool, int | None]:
    """Whether a ``stage`` (``val``, ``test``, ``predict``) run saw only part of its split,
    and the split size (``None`` when unknown).

    Partial: fewer distinct segments than the split holds; when the size is unknown, a
    ``fast_dev_run`` or ``limit_{stage}_batches`` other than 1.0."""
    loaders = "val_dataloaders" if stage == "val" else f"{stage}_dataloaders"
    total = split_size(getattr(trainer, loaders, None))
    if total is not None:
        return num_segments < total, total
    limit = getattr(trainer, f"limit_{stage}_batches", 1.0)
    return bool(getattr(trainer, "fast_dev_run", False)) or limit not in (1.0, None), None


def report_partial(trainer: Any, stage: str, num_segments: int) -> bool:
    """Log "N of M segments" (process 0) when a ``stage`` run saw only part of its split."""
    partial, total = is_partial(trainer, stage, num_segments)
    if partial and getattr(trainer, "is_global_zero", True):
        log.warning(
            "%s metrics of a partial run: %d of %s segments of the split (fast_dev_run or "
            "limit_%s_batches)",
            stage,
            num_segments,
            "?" if total is None else total,
            stage,
        )
    return partial


def evaluator_owns_test_metrics(trainer: Any) -> bool:
    """Whether a callback of ``trainer`` (an evaluator with ``owns_test_metrics = True``) logs
    the test metrics itself, so that the LightningModule logs none of them (one name per
    metric, one value)."""
    callbacks = getattr(trainer, "callbacks", None) or []
    return any(getattr(callback, "owns_test_metrics", False) for callback in callbacks)
