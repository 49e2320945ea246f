from __future__ import annotations

from pathlib import Path

import pytest
import torch

from epic_protocol.features import FeatureFileError
from epic_protocol.sampling import anticipation_frames, early_recognition_frames
from rulstm.data import AnticipationDataModule, MissingFeaturesError


def write(path: Path, rows: list[tuple]) -> str:
    path.write_text("".join(",".join(str(c) for c in row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def splits(tmp_path):
    train = write(
        tmp_path / "training.csv",
        [
            (i, "P01_01", 100 + 20 * i, 130 + 20 * i, i % 3, i % 2, 2 * (i % 3) + i % 2)
            for i in range(10)
        ]
        + [(99, "P01_01", 5, 30, 0, 0, 0)],  # starts too early: dropped in training
    )
    val = write(
        tmp_path / "validation.csv",
        [(f"P02_01_{i}", "P02_01", 200 + 7 * i, 260 + 7 * i, 1, 1, 3) for i in range(5)]
        + [("P02_01_early", "P02_01", 3, 40, 2, 0, 2)],
    )
    test = write(tmp_path / "test.csv", [("P02_01_9", "P02_01", 150, 170)])
    return train, val, test


def test_batches_are_typed_dicts_with_two_workers(tmp_path, splits, feature_file):
    train, val, test = splits
    rgb = feature_file("rgb.h5", videos={"P01_01": 400, "P02_01": 400}, dim=6)
    obj = feature_file(
        "obj.h5", videos={"P01_01": 400, "P02_01": 400}, dim=3, modality="obj", every=4
    )
    dm = AnticipationDataModule(
        features={"rgb": str(rgb), "obj": str(obj)},
        train_annotations=train,
        val_annotations=val,
        test_annotations=test,
        batch_size=4,
        num_workers=2,
    )
    assert dm.feature_dims == {"rgb": 6, "obj": 3}
    assert dm.num_actions == 6  # built from the training split's action ids
    dm.setup("fit")
    assert len(dm.dataset("train")) == 10 and dm.dataset("train").num_dropped == 1
    batches = list(dm.train_dataloader())
    assert sum(len(b["uid"]) for b in batches) == 10
    batch = batches[0]
    assert batch["features"]["rgb"].shape == (4, 14, 6)
    assert batch["features"]["obj"].shape == (4, 14, 3)
    assert batch["action"].dtype == torch.long and batch["valid"].all()
    # Row i of the rgb file stores frame i in column 0: the sampled frames come back.
    first_uid = batch["uid"][0]
    start = 100 + 20 * int(first_uid)
    assert batch["features"]["rgb"][0, :, 0].tolist() == anticipation_frames(start).tolist()
    # obj is sparse (every 4th frame): the latest stored frame at or before each sample.
    expected = [f - (f - 1) % 4 for f in anticipation_frames(start).tolist()]
    assert batch["features"]["obj"][0, :, 0].tolist() == expected

    (val_batch, val_tail) = list(dm.val_dataloader())
    assert val_batch["action"].tolist() == [3, 3, 3, 3]
    assert val_tail["uid"] == ["P02_01_4", "P02_01_early"]
    assert val_tail["valid"].tolist() == [True, False]
    assert val_tail["features"]["rgb"][1].abs().sum() == 0  # dropped sample kept as zeros

    dm.setup("test")
    (test_batch,) = list(dm.test_dataloader())
    assert test_batch["action"].tolist() == [-1] and test_batch["verb"].tolist() == [-1]


def test_early_recognition_task(tmp_path, splits, feature_file):
    train, val, _ = splits
    rgb = feature_file("rgb.h5", videos={"P01_01": 400, "P02_01": 400}, dim=2)
    dm = AnticipationDataModule(
        features={"rgb": str(rgb)},
        train_annotations=train,
        val_annotations=val,
        task="early_recognition",
        batch_size=11,
        num_workers=0,
        in_memory=True,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["features"]["rgb"].shape == (11, 8, 2)  # early samples are never dropped
    uid = batch["uid"].index("3")
    assert (
        batch["features"]["rgb"][uid, :, 0].tolist() == early_recognition_frames(160, 190).tolist()
    )


def test_shipped_ek55_split_with_a_feature_file(tmp_path, feature_file):
    from epic_protocol.annotations import read_rulstm_split
    from rulstm.resources import resolve_path

    segments = read_rulstm_split(resolve_path("builtin:ek55/validation.csv"))
    videos = {}
    for s in segments:
        videos[s.video_id] = max(videos.get(s.video_id, 0), s.start_frame)
    rgb = feature_file("rgb.h5", videos=videos, dim=1, every=30)
    dm = AnticipationDataModule(
        features={"rgb": str(rgb)},
        val_annotations="builtin:ek55/validation.csv",
        actions="builtin:ek55/actions.csv",
        batch_size=128,
        num_workers=0,
    )
    assert dm.num_actions == 2513
    dm.setup("validate")
    assert len(dm.dataset("val")) == 4979
    batch = next(iter(dm.val_dataloader()))
    assert batch["features"]["rgb"].shape == (128, 14, 1)


def test_errors_name_the_problem(tmp_path, splits, feature_file):
    train, val, _ = splits
    rgb = feature_file("rgb.h5", videos={"P01_01": 400}, dim=2)
    dm = AnticipationDataModule(
        features={"rgb": str(rgb)}, train_annotations=train, val_annotations=val, num_workers=0
    )
    # Checked when the split is set up (main process), not mid-epoch in a worker.
    with pytest.raises(MissingFeaturesError, match="video 'P02_01' is not in"):
        dm.setup("fit")
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        AnticipationDataModule(features={"rgb": str(tmp_path / "nope.h5")})
    fifty = feature_file("fifty.h5", videos={"P01_01": 10}, dim=2, fps=50.0)
    with pytest.raises(FeatureFileError, match="50.0 fps"):
        AnticipationDataModule(features={"rgb": str(fifty)})
    with pytest.raises(ValueError, match="no test annotations"):
        AnticipationDataModule(features={"rgb": str(rgb)}).dataset("test")


def _epic(path: Path, rows: list[tuple]) -> str:
    header = "narration_id,video_id,start_timestamp,stop_timestamp,verb_class,noun_class\n"
    path.write_text(header + "".join(",".join(str(c) for c in row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize(
    "style", ["rulstm_split", "epic_csv_vocabulary_from_training", "actions_csv"]
)
def test_pairs_outside_the_vocabulary_are_kept_reported_and_indexed(
    style, tmp_path, splits, feature_file, caplog
):
    rgb = feature_file("rgb.h5", videos={"P01_01": 400, "P02_01": 400}, dim=6)
    kwargs: dict = {}
    if style == "rulstm_split":  # EK55 / EGTEA-style: action ids in the split, -1 for none
        train, _, _ = splits
        val = write(
            tmp_path / "val.csv",
            [("P02_01_0", "P02_01", 200, 260, 1, 1, 3), ("P02_01_1", "P02_01", 210, 260, 7, 7, -1)],
        )
    else:  # EK100-style EPIC CSVs: action ids come from the vocabulary
        train = _epic(
            tmp_path / "train.csv",
            [
                (f"P01_01_{i}", "P01_01", f"00:00:0{4 + i}.00", "00:00:09.50", i % 2, 1)
                for i in range(4)
            ],
        )
        val = _epic(
            tmp_path / "val.csv",
            [
                ("P02_01_0", "P02_01", "00:00:07.00", "00:00:08.00", 1, 1),
                ("P02_01_1", "P02_01", "00:00:07.50", "00:00:08.00", 7, 7),  # a new pair
            ],
        )
        if style == "actions_csv":
            kwargs["actions"] = write(
                tmp_path / "actions.csv",
                [("id", "verb", "noun", "action"), (0, 0, 1, "a"), (1, 1, 1, "b")],
            )
    dm = AnticipationDataModule(
        features={"rgb": str(rgb)},
        train_annotations=train,
        val_annotations=val,
        batch_size=4,
        num_workers=0,
        **kwargs,
    )
    with caplog.at_level("WARNING"):
        dm.setup("validate")
    assert "1 of 2 segments have a (verb, noun) pair that is not an action" in caplog.text
    assert "P02_01_1" in caplog.text
    (batch,) = list(dm.val_dataloader())
    assert batch["uid"] == ["P02_01_0", "P02_01_1"]
    assert batch["action"][1] == -1 and batch["verb"][1] == 7 and batch["noun"][1] == 7
    assert batch["action"][0] >= 0
    assert batch["index"].tolist() == [0, 1]


def test_a_frame_past_the_video_end_fails_at_setup_or_clamps_with_one_warning(
    tmp_path, splits, feature_file
):
    import warnings

    from epic_protocol.features import BeyondEndWarning

    train, val, _ = splits
    # Early recognition reads up to each segment's end: the last training segment ends at
    # frame 310, but P01_01 decoded to 300 frames (stored every 4th: last stored frame 297).
    rgb = feature_file("rgb.h5", videos={"P01_01": 300}, dim=2, every=4)
    kwargs = dict(
        features={"rgb": str(rgb)},
        train_annotations=train,
        task="early_recognition",
        batch_size=16,
        num_workers=0,
    )
    dm = AnticipationDataModule(**kwargs)
    with pytest.raises(MissingFeaturesError) as caught:
        dm.setup("fit")
    assert "frame 310 of video 'P01_01'" in str(caught.value)
    assert "last stored frame 297" in str(caught.value) and str(rgb) in str(caught.value)

    dm = AnticipationDataModule(**kwargs, beyond_end="clamp")
    with pytest.warns(BeyondEndWarning) as caught:
        dm.setup("fit")
    assert len(caught) == 1 and "P01_01" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning for the same video
        batch = next(iter(dm.train_dataloader()))
    assert batch["features"]["rgb"][:, :, 0].max().item() == 297.0


def test_batched_reads_give_every_sample_its_own_rows(tmp_path, splits, feature_file):
    """The DataLoader fetches whole batches (AnticipationDataset.__getitems__, one read per
    video and modality); every sample must still get exactly its own frames."""
    train, val, _ = splits
    rgb = feature_file("rgb.h5", videos={"P01_01": 400, "P02_01": 400}, dim=6)
    obj = feature_file("obj.h5", videos={"P01_01": 400, "P02_01": 400}, dim=3, every=4)
    dm = AnticipationDataModule(
        features={"rgb": str(rgb), "obj": str(obj)},
        train_annotations=train,
        val_annotations=val,
        batch_size=3,
        num_workers=0,
    )
    dm.setup("fit")
    for split in ("train", "val"):
        dataset = dm.dataset(split)
        indices = list(range(len(dataset)))[::-1]  # not in file order
        batch = dataset.__getitems__(indices)
        for index, item in zip(indices, batch, strict=True):
            sample = dataset.samples[index]
            assert item["uid"] == sample.segment.uid
            assert item["valid"] == (sample.frames is not None)
            for modality, store in dm.stores.items():
                if sample.frames is None:
                    assert item["features"][modality].abs().sum() == 0
                else:
                    expected = store.lookup(sample.segment.video_id, sample.frames)
                    assert torch.equal(item["features"][modality], torch.from_numpy(expected))


def test_a_vocabulary_built_from_an_inconsistent_training_split_names_the_file(
    tmp_path, feature_file
):
    train = write(
        tmp_path / "training.csv",
        [(1, "P01_01", 100, 130, 1, 1, 2), (5, "P01_01", 200, 230, 0, 1, 2)],
    )
    rgb = feature_file("rgb.h5", videos={"P01_01": 400}, dim=4)
    dm = AnticipationDataModule(features={"rgb": str(rgb)}, train_annotations=train)
    with pytest.raises(ValueError, match=r"training.csv: action 2 is \(1, 1\) .* segment 5"):
        _ = dm.num_actions


def test_a_non_finite_feature_of_a_file_made_elsewhere_fails_at_setup(
    tmp_path, splits, feature_file
):
    """Named at set-up (file, video, frame), not as NaN scores in the middle of training."""
    import h5py

    from epic_protocol.features import NonFiniteFeatureError

    train, val, _ = splits
    rgb = feature_file("rgb.h5", videos={"P01_01": 400, "P02_01": 400}, dim=2)
    with h5py.File(rgb, "a") as handle:  # as another tool writes it: no 'finite' attribute
        for video in handle:
            assert handle[video].attrs["finite"]  # this project's writer checked every row
            del handle[video].attrs["finite"]
        rows = handle["P02_01"]["features"]
        frame = int(handle["P02_01"]["frames"][123])
        rows[123, 1] = float("nan")
    dm = AnticipationDataModule(
        features={"rgb": str(rgb)}, train_annotations=train, val_annotations=val, num_workers=0
    )
    with pytest.raises(NonFiniteFeatureError) as caught:
        dm.setup("fit")
    message = str(caught.value)
    assert message.startswith(f"{rgb}: video 'P02_01': frame {frame}: the rgb feature vector")
    assert "(NaN in 1 of 2 values)" in message
