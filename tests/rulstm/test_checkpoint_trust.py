"""A checkpoint is data: the network class it names is looked up in an allow-list, never
imported or called, and anything else is refused naming the file and the class path (the
loader, the online anticipator; the demo and the web page are in tests/rulstm_apps)."""

from __future__ import annotations

import shlex
import sys

import pytest
import torch
import yaml
from torch import nn

from rulstm import OnlineAnticipator
from rulstm.checkpoints import (
    check_hyperparameter_classes,
    load_net,
    load_weights,
    read_checkpoint,
)
from rulstm.models import RULSTM, RULSTMFusion
from rulstm.models.spec import (
    NET_KEY,
    NETWORKS,
    UntrustedClassError,
    build_net,
    describe_net,
    register_net,
)


def _shell_checkpoint(path, marker) -> None:
    """Plain dicts and strings (loads with weights_only=True) naming os.system."""
    torch.save(
        {
            NET_KEY: {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}},
            "state_dict": {},
        },
        path,
    )


@pytest.fixture
def importable(tmp_path, monkeypatch):
    """A module ``planted_net`` on sys.path that creates ``imported.marker`` when imported."""
    marker = tmp_path / "imported.marker"
    (tmp_path / "planted_net.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "import torch\n\nclass Net(torch.nn.Module):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop("planted_net", None)


def test_a_checkpoint_naming_os_system_runs_nothing(tmp_path):
    marker = tmp_path / "ran.marker"
    checkpoint = tmp_path / "evil.ckpt"
    _shell_checkpoint(checkpoint, marker)
    with pytest.raises(UntrustedClassError) as caught:
        load_net(checkpoint)
    assert not marker.exists()
    message = str(caught.value)
    assert str(checkpoint) in message and "'os.system'" in message and "\n" not in message
    with pytest.raises(ValueError, match=r"evil\.ckpt.*'os\.system'"):
        OnlineAnticipator.from_checkpoint(checkpoint)
    assert not marker.exists()


def test_a_class_path_is_not_imported(tmp_path, importable):
    checkpoint = tmp_path / "planted.ckpt"
    torch.save({NET_KEY: {"class_path": "planted_net.Net", "init_args": {}}}, checkpoint)
    with pytest.raises(UntrustedClassError, match=r"planted\.ckpt.*'planted_net\.Net'"):
        load_net(checkpoint)
    assert not importable.exists() and "planted_net" not in sys.modules


def test_the_projects_networks_load_under_both_paths(tmp_path):
    net = RULSTM(num_classes=4, feat_dim=3, hidden=5)
    for class_path in ("rulstm.models.RULSTM", "rulstm.models.rulstm.RULSTM"):
        spec = {"class_path": class_path, "init_args": {"num_classes": 4, "feat_dim": 3}}
        assert isinstance(build_net(spec), RULSTM)
    path = tmp_path / "rgb.ckpt"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({NET_KEY: {"class_path": "rulstm.models.RULSTM", "init_args": {
        "num_classes": 4, "feat_dim": 3, "hidden": 5}}, "state_dict": state}, path)  # fmt: skip
    assert isinstance(load_net(path), RULSTM)


def test_a_registered_class_builds(monkeypatch):
    monkeypatch.setattr("rulstm.models.spec.NETWORKS", dict(NETWORKS))

    class Mine(nn.Module):
        def __init__(self, *, size: int) -> None:
            super().__init__()
            self.linear = nn.Linear(size, 1)

    spec = {"class_path": "my_project.Mine", "init_args": {"size": 3}}
    with pytest.raises(UntrustedClassError):
        build_net(spec)
    register_net(Mine, "my_project.Mine")
    assert isinstance(build_net(spec), Mine)
    with pytest.raises(TypeError):
        register_net(print)  # type: ignore[arg-type]


def test_hyperparameters_may_name_only_networks_and_optimisers(tmp_path):
    fine = {
        "_class_path": "rulstm.lightning.AnticipationModule",
        "net": {"class_path": "rulstm.models.RULSTMFusion", "init_args": {}},
        "optimizer": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.1}},
        "scheduler": {"class_path": "torch.optim.lr_scheduler.StepLR"},
    }
    check_hyperparameter_classes("a.ckpt", fine)
    for bad in (
        {"net": {"class_path": "os.system"}},
        {"_class_path": "subprocess.Popen"},
        {"optimizer": {"class_path": "torch.optim.nosuch.Thing"}},
        {"callbacks": [{"class_path": "builtins.exec"}]},
    ):
        with pytest.raises(UntrustedClassError, match="a.ckpt"):
            check_hyperparameter_classes("a.ckpt", bad)


def test_unreadable_checkpoints_name_the_file(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    pickled = tmp_path / "pickled.ckpt"
    torch.save({"x": Payload()}, pickled)
    with pytest.raises(ValueError) as caught:
        read_checkpoint(pickled)
    message = str(caught.value)
    assert message.startswith(f"{pickled}: refused") and "(it names print)" in message
    assert "\n" not in message
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(100)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match=rf"^{truncated}: not a readable checkpoint"):
        read_checkpoint(truncated)


def test_a_fusion_of_other_hidden_sizes_names_the_mapping_as_an_option(tmp_path):
    """Loading a per-branch-hidden fusion into a one-hidden fusion names the sizes as a quoted
    option value that parses back to the mapping (not a screen of tensor shapes)."""
    dims, hidden = {"rgb": 5, "flow": 4}, {"rgb": 6, "flow": 8}
    trained = RULSTMFusion(num_classes=3, feat_dims=dims, hidden=hidden)
    path = tmp_path / "fusion.ckpt"
    state = {f"net.{k}": v for k, v in trained.state_dict().items()}
    torch.save({NET_KEY: describe_net(trained), "state_dict": state}, path)
    with pytest.raises(ValueError, match="does not fit RULSTMFusion") as error:
        load_weights(RULSTMFusion(num_classes=3, feat_dims=dims, hidden=8), path)
    message = str(error.value)
    assert "\n" not in message
    option = message.split("give the network the same (")[1].rstrip(")")
    name, value = shlex.split(option)
    assert name == "--model.net.init_args.hidden" and yaml.safe_load(value) == hidden
