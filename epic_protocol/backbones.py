"""Which backbone computed a modality's features, and the check that a checkpoint is evaluated
on features of the backbone it was trained on.

``rulstm-extract`` records a ``backbone`` dict in each feature file's provenance (name, weights
source, revision or file hash, libraries, preprocessing, clip rule, pooling, precision, dim);
``rulstm fit`` copies the records of its feature files into each checkpoint under
:data:`CHECKPOINT_KEY`. ``rulstm test`` / ``validate`` / ``predict`` and the demo call
:func:`check_backbones`: a difference is refused naming both, a missing record (older files,
imported checkpoints) is a warning.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from epic_protocol.errors import DataError

#: Checkpoint entry: ``{modality: backbone record or None}`` of the training features.
CHECKPOINT_KEY = "rulstm_feature_backbones"


#: Backbone-record entries outside the config hash (a resumed run may change them and add rows
#: to the same file): ``channels_last`` (memory format, float rounding only), the configured
#: ``precision_setting`` (``auto`` or ``32`` resolving to the same hashed ``precision``) and the
#: ``library`` versions.
PER_RUN_KEYS = ("channels_last", "precision_setting", "library")
#: The value of a :data:`PER_RUN_KEYS` entry whose rows came from runs that differed in it;
#: the record's ``mixed`` dict then lists every value, oldest first (``None``: a run that did
#: not record it).
MIXED = "mixed"


class BackboneMismatchError(DataError, ValueError):
    """A checkpoint trained on one backbone's features, given another backbone's."""


def backbone_of(provenance: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``backbone`` record of a feature file's provenance, or None (older files)."""
    record = provenance.get("backbone")
    return dict(record) if isinstance(record, Mapping) else None


def _values_of(record: Mapping[str, Any] | None, key: str) -> list[Any]:
    """The values ``key`` had in the runs behind ``record`` (several if already mixed)."""
    if record is None:
        return [None]
    value = record.get(key)
    mixed = record.get(MIXED)
    if value == MIXED and isinstance(mixed, Mapping) and key in mixed:
        return list(mixed[key])
    return [value]


def combine_records(
    current: Mapping[str, Any], earlier: Iterable[Mapping[str, Any] | None]
) -> dict[str, Any]:
    """The backbone record of a feature file holding rows of the run recorded as ``current``
    and of the runs recorded as ``earlier`` (oldest first; ``None``: a file with no record),
    which share its config hash: ``current`` with each :data:`PER_RUN_KEYS` entry whose value
    differed between the runs set to :data:`MIXED` and its values, oldest first, listed under
    ``record["mixed"][key]``. When none differed it equals ``current``.

    Example: ``{"channels_last": "mixed", "mixed": {"channels_last": [False, True]}, ...}``.
    """
    records = [*earlier, current]
    combined = {k: v for k, v in current.items() if k != MIXED}
    mixed: dict[str, list[Any]] = {}
    for key in PER_RUN_KEYS:
        values: list[Any] = []
        seen: set[str] = set()
        for record in records:
            for value in _values_of(record, key):
                encoded = json.dumps(value, sort_keys=True, default=str)
                if encoded not in seen:
                    seen.add(encoded)
                    values.append(value)
        if len(values) > 1:
            combined[key] = MIXED
            mixed[key] = values
    if mixed:
        combined[MIXED] = mixed
    return combined


#: Recorded by newer files only: compared where both records have them.
INPUT_KEYS = ("decode_size", "flow_method")


def _size(value: Any) -> str:
    width, height = (list(value) + [None, None])[:2]
    if width is None and height is None:
        return "the video's own size"
    return f"{width if width is not None else 'auto'}x{height if height is not None else 'auto'}"


def describe(record: Mapping[str, Any]) -> str:
    """``timm:vit_base_patch14_dinov2 (weights ..., revision ..., frames decoded at
    456x256)`` for messages."""
    text = f"{record.get('backbone')} (weights {record.get('weights')}"
    if record.get("revision"):
        text += f", revision {record['revision']}"
    if record.get("flow_method"):
        text += f", {record['flow_method']} flow"
    if "decode_size" in record:
        text += f", frames decoded at {_size(record['decode_size'])}"
    return text + ")"


def same_backbone(first: Mapping[str, Any], second: Mapping[str, Any]) -> bool:
    """Same name, clip rule and dimension; the same decode size and flow method where both
    record them (:data:`INPUT_KEYS`); same weights revision where both record one of the
    same kind (two file hashes, or two hub revisions); otherwise the same weights source."""
    for key in ("backbone", "clip_length", "clip_stride", "dim"):
        if first.get(key) != second.get(key):
            return False
    for key in INPUT_KEYS:  # older records lack them: compared only where both have them
        if key in first and key in second and first[key] != second[key]:
            return False
    one, two = first.get("revision"), second.get("revision")
    if one and two and str(one).startswith("sha256:") == str(two).startswith("sha256:"):
        return one == two
    if one or two:  # a hash against a hub revision: the same files may be behind both
        return True
    return first.get("weights") == second.get("weights")


def check_backbones(
    features: Mapping[str, Mapping[str, Any] | None],
    checkpoint: Mapping[str, Mapping[str, Any] | None] | None,
    *,
    features_name: str,
    checkpoint_name: str,
) -> list[str]:
    """Compare the backbone records of the features given (per modality) with those a
    checkpoint was trained on. Raises :class:`BackboneMismatchError` naming both when they
    differ; warns (and returns the warnings) when either side records none."""
    messages: list[str] = []
    if checkpoint is None:
        if any(record is not None for record in features.values()):
            messages.append(
                f"{checkpoint_name} records no feature backbone (trained before backbones were "
                f"recorded, or imported): cannot check it against {features_name}"
            )
    else:
        for modality, record in features.items():
            trained = checkpoint.get(modality)
            if record is None or trained is None:
                if record is not None or trained is not None:
                    missing = features_name if record is None else checkpoint_name
                    messages.append(
                        f"{missing} records no {modality} backbone: cannot check that "
                        f"{checkpoint_name} and {features_name} use the same one"
                    )
                continue
            if not same_backbone(record, trained):
                raise BackboneMismatchError(
                    f"{checkpoint_name} was trained on {modality} features of "
                    f"{describe(trained)} but {features_name} are {describe(record)}; "
                    "extract the features with the checkpoint's backbone, or train on these"
                )
    for message in messages:
        warnings.warn(message, UserWarning, stacklevel=2)
    return messages
