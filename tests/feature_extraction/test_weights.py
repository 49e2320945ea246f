"""The weights rules every backbone builder shares: seeded random init without touching the
global RNG, the spellings of "no weights", the hash of a weights file or folder."""

from __future__ import annotations

from pathlib import Path

import torch

from feature_extraction.weights import file_hash, is_random_weights, seeded


def test_seeded_blocks_repeat_and_leave_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    with seeded(7):
        first = torch.rand(3)
    with seeded(7):
        second = torch.rand(3)
    assert torch.equal(first, second)
    assert torch.equal(torch.rand(1), expected_next)


def test_the_spellings_of_no_weights() -> None:
    for spelling in (None, "", " none ", "None", "NULL", "random"):
        assert is_random_weights(spelling)
    for weights in ("DEFAULT", "IMAGENET1K_V2", "model.pth", "org/repo"):
        assert not is_random_weights(weights)


def test_a_folder_hash_covers_its_weight_files_only(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    before = file_hash(folder)
    (folder / "README.md").write_text("notes")  # not a weight or config file
    assert file_hash(folder) == before and len(before) == 16
    (folder / "model.safetensors").write_bytes(b"other weights")
    assert file_hash(folder) != before
    assert file_hash(folder / "config.json") != file_hash(folder / "model.safetensors")
