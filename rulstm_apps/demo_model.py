"""The model ``rulstm-demo`` steps: one or several RU-LSTM checkpoints as one
:class:`rulstm.OnlineAnticipator` (:meth:`~rulstm.OnlineAnticipator.from_checkpoint`), with
the feature sizes it reads and how its branches are fused."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rulstm_apps.demo_errors import DemoError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    anticipator: Any  # rulstm.OnlineAnticipator
    dims: dict[str, int]  # modality -> feature size the model reads
    alpha: float
    note: str | None = None  # how the branches are fused when it is not the model's own way


def load_model(
    path: Path | Sequence[Path],
    *,
    device: torch.device,
    alpha: float | None = None,
    modality: str | Sequence[str] | None = None,
    available: Sequence[str] | None = None,
    horizon: float = 1.0,
    optional: Sequence[str] = ("obj",),
    weights: str = "fp32",
) -> LoadedModel:
    """The online anticipator of RU-LSTM checkpoints, through
    :meth:`rulstm.OnlineAnticipator.from_checkpoint` (branch, fusion, or several branches
    averaged).

    ``alpha`` and a branch's ``modality`` come from the checkpoint's hyper-parameters when it
    was written by ``rulstm fit``; otherwise from the arguments; ``weights`` is the
    anticipator's precision mode (``auto``, ``fp32``, ``bf16``, ``int8``). A fusion checkpoint whose
    ``optional`` modalities are not ``available`` runs its other branches averaged, with a
    ``note`` saying so; any other missing modality is an error.
    """
    from rulstm import OnlineAnticipator

    paths = [Path(path)] if isinstance(path, str | Path) else [Path(p) for p in path]
    name = " + ".join(map(str, paths))
    if isinstance(modality, str | None):
        modalities = modality
    else:
        modalities = list(modality)
        if len(modalities) == 1:
            modalities = modalities[0]
    try:
        anticipator = OnlineAnticipator.from_checkpoint(
            paths,
            modality=modalities,
            available=available,
            alpha=alpha,
            horizon=horizon,
            device=device,
            weights=weights,
        )
    except FileNotFoundError as error:
        raise DemoError(str(error)) from None
    except (ValueError, KeyError) as error:
        message = str(error.args[0] if isinstance(error, KeyError) else error)
        if "not a multiple of alpha" in message:
            message = f"--horizon {horizon}: {message}"
        raise DemoError(message) from None
    if anticipator.fusion is None and anticipator.modality is None:
        raise DemoError(
            f"{name} is a single-branch checkpoint that does not record its modality; "
            "pass --modality rgb|flow|obj"
        )
    note = None
    if anticipator.left_out:
        required = [m for m in anticipator.left_out if m not in optional]
        if required:
            wanted = [*anticipator.modalities, *anticipator.left_out]
            raise DemoError(
                f"{name} reads modalities {wanted}, but the extraction config produces "
                f"{list(available or ())} (missing {list(anticipator.left_out)})"
            )
        used = "+".join(anticipator.modalities)
        note = f"no {'/'.join(anticipator.left_out)}: {used} averaged"
        log.warning(
            "%s fuses %s with MATT, but there are no %s features (no --detections, and the "
            "extraction config has no such modality): fusing %s by averaging their scores "
            "instead",
            name,
            list(anticipator.modalities) + list(anticipator.left_out),
            "/".join(anticipator.left_out),
            ", ".join(anticipator.modalities),
        )
    elif len(paths) > 1:
        note = f"{'+'.join(anticipator.modalities)} averaged"
        log.info("fusing %s by averaging their scores", name)
    return LoadedModel(
        anticipator=anticipator,
        dims=anticipator.feature_dims,
        alpha=anticipator.alpha,
        note=note,
    )


def check_demo_backbones(checkpoints: Any, extractor: Any, needed: Mapping[str, int]) -> None:
    """Refuse an extraction whose backbone differs from the one the checkpoints were trained
    on (naming both); warn when either records none (:mod:`epic_protocol.backbones`)."""
    from epic_protocol.backbones import CHECKPOINT_KEY, BackboneMismatchError, check_backbones
    from feature_extraction import backbone_record
    from rulstm.checkpoints import read_checkpoint

    paths = [checkpoints] if isinstance(checkpoints, str | Path) else list(checkpoints)
    features = {m: backbone_record(extractor.models, m) for m in needed if m in ("rgb", "flow")}
    for path in paths:
        trained = read_checkpoint(path).get(CHECKPOINT_KEY)
        if trained is not None:
            trained = {m: r for m, r in trained.items() if m in features}
        relevant = {m: r for m, r in features.items() if trained is None or m in trained}
        try:
            check_backbones(
                relevant,
                trained,
                features_name="the extraction config's features",
                checkpoint_name=str(path),
            )
        except BackboneMismatchError as error:
            raise DemoError(str(error)) from None
