"""The generated dataset: files parse with the project's readers, are consistent with each
other, and are reproducible byte for byte."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import av
import numpy as np
import pytest
import yaml

from epic_protocol import (
    anticipation_frames,
    read_actions_csv,
    read_class_names,
    read_epic_csv,
    read_id_list,
    read_rulstm_split,
    read_video_info,
)
from synthetic_kitchen import (
    PRESETS,
    BayesBound,
    DatasetPaths,
    DatasetSize,
    RecipeModel,
    TimingModel,
    bayes_bound,
    generate_dataset,
    main,
)
from synthetic_kitchen.render import palette_rgb


def _flat(tree: object) -> list[float]:
    if isinstance(tree, dict):
        return [value for key in sorted(tree) for value in _flat(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [value for item in tree for value in _flat(item)]
    return [float(tree)]


def _all_files(paths: DatasetPaths) -> list[Path]:
    return sorted(p for p in paths.root.rglob("*") if p.is_file())


def test_every_declared_path_exists(tiny_dataset: DatasetPaths) -> None:
    for field in fields(DatasetPaths):
        assert getattr(tiny_dataset, field.name).exists(), field.name


def test_annotations_parse_and_agree(tiny_dataset: DatasetPaths) -> None:
    size = PRESETS["tiny"]
    training = read_rulstm_split(tiny_dataset.training_csv)
    validation = read_rulstm_split(tiny_dataset.validation_csv)
    assert len(training) + len(validation) == (
        size.participants * size.videos_per_participant * size.actions_per_video
    )
    vocabulary = read_actions_csv(tiny_dataset.actions_csv)
    verbs = read_class_names(tiny_dataset.verb_classes_csv)
    nouns = read_class_names(tiny_dataset.noun_classes_csv)
    recipe = RecipeModel.load(tiny_dataset.recipe_json)
    assert tuple(verbs) == recipe.verbs and tuple(nouns) == recipe.nouns
    assert vocabulary.num_actions == recipe.num_actions
    for segment in training + validation:
        assert vocabulary.action_of(segment.verb, segment.noun) == segment.action
        assert segment.uid.startswith(segment.video_id + "_")
        # every sample is kept by the protocol (none dropped)
        assert anticipation_frames(segment.start_frame) is not None

    # split by video, and the video lists agree with the splits
    train_videos = read_id_list(tiny_dataset.training_videos_csv)
    validation_videos = read_id_list(tiny_dataset.validation_videos_csv)
    assert {s.video_id for s in training} == set(train_videos)
    assert {s.video_id for s in validation} == set(validation_videos)
    assert not set(train_videos) & set(validation_videos)

    # the EPIC-format files hold the same segments (native fps = 30: same frame numbers)
    fps = read_video_info(tiny_dataset.video_info_csv)
    assert set(fps) == set(train_videos) | set(validation_videos)
    for path, split in (
        (tiny_dataset.epic_train_csv, training),
        (tiny_dataset.epic_validation_csv, validation),
    ):
        from_timestamps = read_epic_csv(path, vocabulary=vocabulary)
        from_frames = read_epic_csv(
            path, video_fps=tiny_dataset.video_info_csv, vocabulary=vocabulary, frames_from="frames"
        )
        assert from_timestamps == from_frames == split


def test_videos_match_the_annotations(tiny_dataset: DatasetPaths) -> None:
    size = PRESETS["tiny"]
    info = tiny_dataset.video_info_csv.read_text().splitlines()[1:]
    durations = {line.split(",")[0]: float(line.split(",")[1]) for line in info}
    segments = read_rulstm_split(tiny_dataset.training_csv)
    segments += read_rulstm_split(tiny_dataset.validation_csv)
    for video_id, duration in durations.items():
        with av.open(str(tiny_dataset.video(video_id))) as container:
            stream = container.streams.video[0]
            frames = sum(1 for _ in container.decode(stream))
            assert (stream.width, stream.height) == (size.width, size.height)
        assert frames == round(duration * 30)
        last = max(s.end_frame for s in segments if s.video_id == video_id)
        assert last < frames


def test_decord_reads_the_videos(tiny_dataset: DatasetPaths) -> None:
    decord = pytest.importorskip("decord")
    path = next(iter(sorted(tiny_dataset.videos_dir.glob("*.mp4"))))
    with av.open(str(path)) as container:
        expected = sum(1 for _ in container.decode(video=0))
    reader = decord.VideoReader(str(path))
    assert len(reader) == expected
    assert reader[expected - 1].shape == (PRESETS["tiny"].height, PRESETS["tiny"].width, 3)


def test_palette_file(tiny_dataset: DatasetPaths) -> None:
    entries = yaml.safe_load(tiny_dataset.palette_yaml.read_text())
    nouns = read_class_names(tiny_dataset.noun_classes_csv)
    assert [e["id"] for e in entries] == list(range(len(nouns)))
    assert [e["name"] for e in entries] == nouns
    assert [tuple(e["rgb"]) for e in entries] == palette_rgb(len(nouns))
    assert len({tuple(e["rgb"]) for e in entries}) == len(entries)


def test_bayes_file_is_the_bound_of_the_validation_split(tiny_dataset: DatasetPaths) -> None:
    stored = BayesBound.load(tiny_dataset.bayes_json)
    recipe = RecipeModel.load(tiny_dataset.recipe_json)
    vocabulary = read_actions_csv(tiny_dataset.actions_csv)
    assert recipe.actions == tuple(zip(vocabulary.verbs.tolist(), vocabulary.nouns.tolist()))
    recomputed = bayes_bound(recipe, read_rulstm_split(tiny_dataset.validation_csv))
    assert _flat(stored.to_dict()) == pytest.approx(_flat(recomputed.to_dict()), abs=1e-12)
    entry = stored.at(1.0)
    assert stored.chance.uniform.top5 < entry.action_expected.top5 < 1.0
    assert entry.action_expected.top1 < entry.action_expected.top5
    data = json.loads(tiny_dataset.bayes_json.read_text())
    assert data["split"] == "validation"


def test_same_seed_same_bytes_whatever_the_workers(
    tiny_dataset: DatasetPaths, tmp_path: Path
) -> None:
    again = generate_dataset(tmp_path / "again", preset="tiny", seed=0, workers=2, progress=False)
    names = [p.relative_to(tiny_dataset.root) for p in _all_files(tiny_dataset)]
    assert names == [p.relative_to(again.root) for p in _all_files(again)]
    for name in names:
        assert (tiny_dataset.root / name).read_bytes() == (again.root / name).read_bytes(), name


def test_another_seed_gives_another_dataset(tiny_dataset: DatasetPaths, tmp_path: Path) -> None:
    size = DatasetSize(
        participants=1,
        videos_per_participant=3,
        validation_videos_per_participant=1,
        actions_per_video=3,
        width=64,
        height=48,
    )
    other = generate_dataset(tmp_path / "other", preset=size, seed=1, workers=1, progress=False)
    first = RecipeModel.load(tiny_dataset.recipe_json)
    second = RecipeModel.load(other.recipe_json)
    assert not np.array_equal(first.transition, second.transition)
    assert len(read_rulstm_split(other.training_csv)) == 2 * 3
    # regenerating smaller into the same folder leaves no video without annotations
    smaller = replace(size, videos_per_participant=2)
    generate_dataset(other.root, preset=smaller, seed=1, workers=1, progress=False)
    assert sorted(p.stem for p in other.videos_dir.glob("*.mp4")) == ["P01_01", "P01_02"]


def test_cli_writes_a_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path / "cli"), "--preset", "tiny", "--workers", "1"]) == 0
    output = capsys.readouterr().out
    assert "Bayes bound at 1.0 s" in output
    assert DatasetPaths.under(tmp_path / "cli").bayes_json.is_file()


def test_bad_sizes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        generate_dataset(tmp_path, preset="huge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="validation_videos_per_participant"):
        DatasetSize(
            participants=1,
            videos_per_participant=1,
            validation_videos_per_participant=1,
            actions_per_video=3,
            width=64,
            height=48,
        )


def test_timing_keeps_the_bound_exact() -> None:
    timing = TimingModel()
    spans, num_frames = timing.schedule(np.random.default_rng(0), 50)
    starts = np.array([start for start, _ in spans])
    assert starts[0] > 8  # no sample dropped
    assert (np.diff(starts) > 60).all()  # the current action has started 2 s before the next
    assert all(end < next_start for (_, end), next_start in zip(spans, starts[1:]))
    assert spans[-1][1] < num_frames
    with pytest.raises(ValueError, match="exceed 2 s"):
        TimingModel(duration=(40, 50), gap=(5, 10))
    with pytest.raises(ValueError, match="dropped"):
        TimingModel(lead_in=(2, 5))
