"""Import the RU-LSTM authors' released checkpoints (``*.pth.tar``).

A released file is ``{"state_dict", "epoch", "perf", "best_perf"}``, the last two numpy
scalars. Parameter names:

* a branch (``..._rgb_best.pth.tar``, flow, obj): ``rolling_lstm.lstm.{weight_ih,
  weight_hh,bias_ih,bias_hh}_l{k}`` (the reference wraps its rolling ``nn.LSTM`` in a
  module), ``unrolling_lstm.*_l{k}``, ``classifier.1.{weight,bias}``;
* the fusion (``..._fusion_best.pth.tar``): ``branches.{0,1,2}.*`` (rgb, flow, obj) and the
  attention MLP ``MATT.{0,3,6}.{weight,bias}``.

They map one to one onto :class:`rulstm.models.RULSTM` (``rolling_lstm.*``) and
:class:`rulstm.models.RULSTMFusion` (``branches.<modality>.*``, ``attention.*``); feature
size, hidden size, depth and number of classes are read from the weight shapes.

:func:`export_reference_state_dict` is the exact inverse (this package's network under the
reference's names) and :func:`write_reference_checkpoint` writes a file in the released layout,
e.g. random-weight stand-ins for the released models (``scripts/make_rulstm_checkpoints.py``).

Loading never unpickles arbitrary objects unless asked: ``torch.load(weights_only=True)``
with the numpy scalar types allow-listed; ``unsafe=True`` (CLI ``--unsafe``) falls back to
full unpickling for files from a trusted source that hold other objects.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from epic_protocol.errors import DataError
from epic_protocol.pickles import numpy_scalar_globals
from rulstm.models import RULSTM, RULSTMFusion
from rulstm.models.spec import NET_KEY

DEFAULT_MODALITIES = ("rgb", "flow", "obj")
RULSTM_CLASS_PATH = "rulstm.models.RULSTM"
FUSION_CLASS_PATH = "rulstm.models.RULSTMFusion"

_LSTM_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class CheckpointImportError(DataError, ValueError):
    """A checkpoint that is not a RU-LSTM reference checkpoint; the message names the key."""


@dataclass
class ReferenceCheckpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    epoch: int | None
    perf: float | None
    best_perf: float | None


@dataclass
class ConvertedNetwork:
    """A reference state dict renamed for this package, and the constructor arguments."""

    class_path: str
    init_args: dict[str, Any]
    state_dict: dict[str, torch.Tensor]


def _to_number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_reference_checkpoint(path: str | Path, *, unsafe: bool = False) -> ReferenceCheckpoint:
    """Load a released checkpoint safely (see module doc) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with path.open("rb") as handle:
        magic = handle.read(4)
    # torch.save writes a zip archive (PK..) or, before PyTorch 1.6, a pickle (protocol 2+).
    if not (magic.startswith(b"PK") or magic[:1] == b"\x80"):
        raise CheckpointImportError(
            f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)"
        )
    try:
        with torch.serialization.safe_globals(numpy_scalar_globals()):
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not unsafe:
            raise CheckpointImportError(
                f"{path}: the file holds objects that safe loading refuses ({error}). "
                "If you trust its source, retry with unsafe=True (CLI: --unsafe), which "
                "unpickles arbitrary Python objects."
            ) from None
        loaded = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointImportError(
            f"{path}: not a readable PyTorch checkpoint ({error})"
        ) from error

    if isinstance(loaded, Mapping) and "state_dict" in loaded:
        state_dict, meta = loaded["state_dict"], loaded
    elif isinstance(loaded, Mapping) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        state_dict, meta = loaded, {}  # a bare state dict
    else:
        raise CheckpointImportError(
            f"{path}: expected a dict with 'state_dict' (RU-LSTM checkpoint) or a state dict, "
            f"got {type(loaded).__name__}"
        )
    # nn.DataParallel checkpoints prefix every name with "module.".
    state_dict = {
        (k[len("module.") :] if k.startswith("module.") else k): v for k, v in state_dict.items()
    }
    epoch = meta.get("epoch")
    return ReferenceCheckpoint(
        path=path,
        state_dict=state_dict,
        epoch=int(epoch) if epoch is not None else None,
        perf=_to_number(meta.get("perf")),
        best_perf=_to_number(meta.get("best_perf")),
    )


def _lstm_depth(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    layers = {
        int(match.group(1))
        for key in state_dict
        if (match := re.fullmatch(re.escape(prefix) + r"weight_ih_l(\d+)", key))
    }
    if not layers:
        raise CheckpointImportError(f"missing key {prefix}weight_ih_l0: not a RU-LSTM branch")
    depth = max(layers) + 1
    if layers != set(range(depth)):
        raise CheckpointImportError(
            f"{prefix}*: LSTM layers {sorted(layers)} are not 0..{depth - 1}"
        )
    return depth


def convert_branch_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, prefix: str = "", dropout: float = 0.8
) -> ConvertedNetwork:
    """Rename one reference branch (keys under ``prefix``) for :class:`RULSTM`."""
    depth = _lstm_depth(state_dict, f"{prefix}rolling_lstm.lstm.")
    renamed: dict[str, torch.Tensor] = {}
    expected = []
    for layer in range(depth):
        for param in _LSTM_PARAMS:
            expected.append(
                (f"{prefix}rolling_lstm.lstm.{param}_l{layer}", f"rolling_lstm.{param}_l{layer}")
            )
            expected.append(
                (f"{prefix}unrolling_lstm.{param}_l{layer}", f"unrolling_lstm.{param}_l{layer}")
            )
    expected += [(f"{prefix}classifier.1.{p}", f"classifier.1.{p}") for p in ("weight", "bias")]
    for source, target in expected:
        if source not in state_dict:
            raise CheckpointImportError(f"missing key {source!r}: not a RU-LSTM branch checkpoint")
        renamed[target] = state_dict[source]
    unexpected = sorted(k for k in state_dict if k.startswith(prefix) and k not in dict(expected))
    if unexpected:
        raise CheckpointImportError(
            f"unexpected keys {unexpected[:5]}: not a RU-LSTM branch checkpoint (depth {depth})"
        )
    weight_hh = renamed["rolling_lstm.weight_hh_l0"]  # (4H, H)
    weight_ih = renamed["rolling_lstm.weight_ih_l0"]  # (4H, D)
    classifier = renamed["classifier.1.weight"]  # (C, H)
    hidden = int(weight_hh.shape[1])
    init_args = {
        "num_classes": int(classifier.shape[0]),
        "feat_dim": int(weight_ih.shape[1]),
        "hidden": hidden,
        "dropout": dropout,
        "depth": depth,
    }
    if (
        renamed["unrolling_lstm.weight_ih_l0"].shape != weight_ih.shape
        or classifier.shape[1] != hidden
    ):
        raise CheckpointImportError(
            f"{prefix or 'branch'}: inconsistent shapes (rolling input {tuple(weight_ih.shape)}, "
            f"unrolling input {tuple(renamed['unrolling_lstm.weight_ih_l0'].shape)}, "
            f"classifier {tuple(classifier.shape)})"
        )
    return ConvertedNetwork(RULSTM_CLASS_PATH, init_args, renamed)


def convert_fusion_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    dropout: float = 0.8,
) -> ConvertedNetwork:
    """Rename a reference fusion (``branches.{i}.*``, ``MATT.*``) for :class:`RULSTMFusion`,
    ``branches.{i}`` becoming ``branches.<modalities[i]>``."""
    indices = sorted(
        {int(m.group(1)) for k in state_dict if (m := re.match(r"branches\.(\d+)\.", k))}
    )
    if indices != list(range(len(modalities))):
        raise CheckpointImportError(
            f"the fusion checkpoint has branches {indices}; expected one per modality "
            f"{list(modalities)} (pass modalities=...)"
        )
    renamed: dict[str, torch.Tensor] = {}
    branch_args = {}
    for index, modality in enumerate(modalities):
        branch = convert_branch_state_dict(state_dict, prefix=f"branches.{index}.", dropout=dropout)
        branch_args[modality] = branch.init_args
        renamed.update({f"branches.{modality}.{k}": v for k, v in branch.state_dict.items()})
    for layer in (0, 3, 6):
        for param in ("weight", "bias"):
            key = f"MATT.{layer}.{param}"
            if key not in state_dict:
                raise CheckpointImportError(f"missing key {key!r}: not a RU-LSTM fusion checkpoint")
            renamed[f"attention.{layer}.{param}"] = state_dict[key]
    known = {f"MATT.{layer}.{p}" for layer in (0, 3, 6) for p in ("weight", "bias")}
    unexpected = sorted(k for k in state_dict if not k.startswith("branches.") and k not in known)
    if unexpected:
        raise CheckpointImportError(f"unexpected keys {unexpected[:5]} in a fusion checkpoint")
    first = next(iter(branch_args.values()))
    for modality, args in branch_args.items():
        for name in ("num_classes", "hidden", "depth"):
            if args[name] != first[name]:
                raise CheckpointImportError(
                    f"branch {modality!r} has {name}={args[name]}, the first branch {first[name]}"
                )
    init_args = {
        "num_classes": first["num_classes"],
        "feat_dims": {m: args["feat_dim"] for m, args in branch_args.items()},
        "hidden": first["hidden"],
        "dropout": dropout,
        "depth": first["depth"],
        "fusion": "matt",
    }
    return ConvertedNetwork(FUSION_CLASS_PATH, init_args, renamed)


def convert_reference_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    dropout: float = 0.8,
) -> ConvertedNetwork:
    """Branch or fusion, told apart by the ``branches.`` / ``MATT.`` keys."""
    if any(k.startswith(("branches.", "MATT.")) for k in state_dict):
        return convert_fusion_state_dict(state_dict, modalities=modalities, dropout=dropout)
    return convert_branch_state_dict(state_dict, dropout=dropout)


def build_network(converted: ConvertedNetwork) -> nn.Module:
    """Instantiate the network and load the converted weights (strictly)."""
    if converted.class_path == RULSTM_CLASS_PATH:
        network: nn.Module = RULSTM(**converted.init_args)
    elif converted.class_path == FUSION_CLASS_PATH:
        network = RULSTMFusion(**converted.init_args)
    else:
        raise ValueError(f"unknown network class {converted.class_path!r}")
    network.load_state_dict(converted.state_dict, strict=True)
    return network


def load_reference_checkpoint(
    path: str | Path,
    *,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    dropout: float = 0.8,
    unsafe: bool = False,
) -> nn.Module:
    """A released RU-LSTM checkpoint as a :class:`RULSTM` (branch) or :class:`RULSTMFusion`
    (fusion; ``modalities`` names its branches in order), dimensions inferred from the
    weights. ``dropout`` is the training-time rate (the reference's 0.8; irrelevant in eval)."""
    checkpoint = read_reference_checkpoint(path, unsafe=unsafe)
    try:
        converted = convert_reference_state_dict(
            checkpoint.state_dict, modalities=modalities, dropout=dropout
        )
    except CheckpointImportError as error:
        raise CheckpointImportError(f"{path}: {error}") from None
    return build_network(converted)


def lightning_checkpoint(
    converted: ConvertedNetwork, *, reference: ReferenceCheckpoint | None = None
) -> dict[str, Any]:
    """A checkpoint that ``trainer.test(ckpt_path=...)`` of a LightningModule storing the
    network as ``self.net`` can load: parameters prefixed ``net.``, and the network described
    under ``rulstm_net`` as ``{class_path, init_args}`` (jsonargparse style), like the
    checkpoints ``rulstm fit`` writes."""
    import lightning

    checkpoint: dict[str, Any] = {
        "state_dict": {f"net.{k}": v.detach().clone() for k, v in converted.state_dict.items()},
        NET_KEY: {"class_path": converted.class_path, "init_args": converted.init_args},
        "pytorch-lightning_version": lightning.__version__,
        "epoch": reference.epoch if reference and reference.epoch is not None else 0,
        "global_step": 0,
    }
    if reference is not None:
        checkpoint["rulstm_reference"] = {
            "source": str(reference.path),
            "epoch": reference.epoch,
            "perf": reference.perf,
            "best_perf": reference.best_perf,
        }
    return checkpoint


def import_checkpoint(
    source: str | Path,
    output: str | Path,
    *,
    modalities: Sequence[str] = DEFAULT_MODALITIES,
    dropout: float = 0.8,
    unsafe: bool = False,
) -> ConvertedNetwork:
    """Convert a released checkpoint into a Lightning-style ``.ckpt`` (see
    :func:`lightning_checkpoint`), after checking that the weights load into the network."""
    reference = read_reference_checkpoint(source, unsafe=unsafe)
    try:
        converted = convert_reference_state_dict(
            reference.state_dict, modalities=modalities, dropout=dropout
        )
    except CheckpointImportError as error:
        raise CheckpointImportError(f"{source}: {error}") from None
    build_network(converted)  # fails here, not at test time, if the weights do not fit
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(lightning_checkpoint(converted, reference=reference), output)
    return converted


def _export_branch(branch: RULSTM, prefix: str) -> dict[str, torch.Tensor]:
    """One branch under the reference's names (the inverse of :func:`convert_branch_state_dict`)."""
    # The reference holds float nn.LSTMs only: a RU-GRU (nn.GRU) or a dynamically quantised
    # branch (whose LSTM is no nn.LSTM) has other parameters, which no released file can carry.
    if not all(isinstance(rnn, nn.LSTM) for rnn in (branch.rolling_lstm, branch.unrolling_lstm)):
        raise ValueError(
            f"{prefix or 'the branch'}: the reference holds float LSTM branches only, not "
            f"{type(branch.rolling_lstm).__name__} (cell={branch.cell!r})"
        )
    exported: dict[str, torch.Tensor] = {}
    for key, value in branch.state_dict().items():
        # The reference wraps its rolling nn.LSTM in a module (attribute "lstm").
        if key.startswith("rolling_lstm."):
            key = "rolling_lstm.lstm." + key[len("rolling_lstm.") :]
        exported[prefix + key] = value
    return exported


def export_reference_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    """A network's parameters under the reference's names: the exact inverse of
    :func:`convert_reference_state_dict` (converting the result gives back the network's state
    dict, name for name and tensor for tensor).

    * :class:`RULSTM` -> ``rolling_lstm.lstm.*_l{k}``, ``unrolling_lstm.*_l{k}``,
      ``classifier.1.{weight,bias}``;
    * :class:`RULSTMFusion` with MATT -> ``branches.{i}.*`` (the branches in
      :attr:`~RULSTMFusion.modalities` order, so ``modalities=`` names them back on import) and
      ``MATT.{0,3,6}.{weight,bias}``.

    The tensors are those of ``network.state_dict()`` (detached, sharing storage with the
    parameters, same dtype and device).

    Raises:
        TypeError: ``network`` is neither a :class:`RULSTM` nor a :class:`RULSTMFusion`.
        ValueError: what the reference cannot hold: RU-GRU or quantised branches, a fusion
            by averaging (no MATT parameters), or branches of different hidden sizes.
    """
    if isinstance(network, RULSTM):
        return _export_branch(network, "")
    if not isinstance(network, RULSTMFusion):
        raise TypeError(
            f"expected a RULSTM or a RULSTMFusion, got {type(network).__name__}: the reference "
            "has no other network"
        )
    if network.attention is None:
        raise ValueError(
            f"fusion={network.fusion!r} has no MATT parameters; the reference's fusion is MATT"
        )
    if len(set(network.branch_hidden.values())) > 1:
        raise ValueError(
            f"the branches have different hidden sizes {network.branch_hidden}; the reference's "
            "fusion builds every branch with one hidden size"
        )
    exported: dict[str, torch.Tensor] = {}
    for index, branch in enumerate(network.branches.values()):
        exported.update(_export_branch(branch, f"branches.{index}."))  # type: ignore[arg-type]
    exported.update({f"MATT.{k}": v for k, v in network.attention.state_dict().items()})
    return exported


def write_reference_checkpoint(
    network: nn.Module,
    path: str | Path,
    *,
    epoch: int = 0,
    perf: float = 0.0,
    best_perf: float = 0.0,
) -> Path:
    """Save ``network`` as the authors' training script saves a model:
    ``{"state_dict": export_reference_state_dict(network), "epoch", "perf", "best_perf"}``, the
    last two numpy float64 scalars (as their meters produce), so that the file reads back with
    :func:`read_reference_checkpoint` like a released one. The parent folder must exist; an
    existing file is replaced. Raises as :func:`export_reference_state_dict`."""
    path = Path(path)
    torch.save(
        {
            "state_dict": export_reference_state_dict(network),
            "epoch": int(epoch),
            "perf": np.float64(perf),
            "best_perf": np.float64(best_perf),
        },
        path,
    )
    return path
