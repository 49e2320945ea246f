"""FHO LTA annotations: reader, windows (as the official dataset builds them), frame mapping."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from epic_protocol.ego4d_lta import (
    LTAAction,
    LTAAnnotationError,
    LTATaxonomy,
    build_windows,
    feature_frames,
    needed_frames,
    read_lta_annotations,
    read_lta_windows,
    read_taxonomy,
    write_lta_annotations,
    write_taxonomy,
)


def entry(clip, idx, start, end, verb=0, noun=0, *, video="vid", parent=0, labels=True):
    record = {
        "clip_uid": clip,
        "video_uid": video,
        "action_idx": idx,
        "action_clip_start_sec": start / 30,
        "action_clip_end_sec": end / 30,
        "action_clip_start_frame": start,
        "action_clip_end_frame": end,
        "clip_parent_start_frame": parent,
    }
    if labels:
        record.update(verb_label=verb, noun_label=noun, verb=f"v{verb}", noun=f"n{noun}")
    return record


def write(tmp_path, entries, name="fho_lta_val.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"clips": entries}))
    return path


@pytest.fixture
def taxonomy(tmp_path):
    path = tmp_path / "fho_lta_taxonomy.json"
    path.write_text(json.dumps({"verbs": ["take", "put", "cut"], "nouns": ["knife", "bowl"]}))
    return read_taxonomy(path)


def test_taxonomy_reader(taxonomy):
    assert taxonomy.verbs == ("take", "put", "cut")
    assert taxonomy.num_nouns == 2


def test_windows_match_the_official_range_and_ids_on_shuffled_input(tmp_path):
    # clip A: 7 actions (action_idx not contiguous), clip B: 3 actions (too short for N=2, Z=3)
    a = [
        entry("A", idx, 10 * i, 10 * i + 15, verb=i % 3, noun=i % 2)
        for i, idx in enumerate([0, 1, 2, 4, 5, 7, 8])
    ]
    b = [entry("B", i, 10 * i, 10 * i + 5) for i in range(3)]
    records = a + b
    random.Random(0).shuffle(records)
    windows = read_lta_windows(write(tmp_path, records), num_input_actions=2, num_future_actions=3)
    # official: range(M - Z - N + 1) = range(7 - 3 - 2 + 1) = 3 windows for A, none for B
    assert [w.id for w in windows] == ["A_1", "A_2", "A_4"]
    first = windows[0]
    assert [x.action_idx for x in first.observed] == [0, 1]
    assert [x.action_idx for x in first.future] == [2, 4, 5]
    assert first.future_verbs.tolist() == [2, 0, 1]
    assert first.future_nouns.tolist() == [0, 1, 0]
    assert [x.action_idx for x in windows[-1].future] == [5, 7, 8]


def test_exactly_n_plus_z_actions_give_one_window():
    actions = [LTAAction("C", "v", i, i, i + 1, 0, 0, 0) for i in range(22)]
    assert [w.id for w in build_windows({"C": actions})] == ["C_1"]
    assert build_windows({"C": actions[:21]}) == []


def test_observed_frames_are_evenly_spaced_and_never_after_the_last_observed_end():
    observed = (
        LTAAction("C", "v", 0, 0, 40, 0, 0, 0),  # overlaps the next one and ends after it
        LTAAction("C", "v", 1, 8, 20, 0, 0, 0),
    )
    future = (LTAAction("C", "v", 2, 15, 30, 0, 0, 0),)
    window = build_windows({"C": [*observed, *future]}, num_input_actions=2, num_future_actions=1)[
        0
    ]
    frames = window.observed_frames(4)
    # action 0: 0 + 40 * s // 4 = 10, 20, 30, 40 -> capped at 20; action 1: 8 + 12 * s // 4
    assert frames.tolist() == [10, 20, 20, 20, 11, 14, 17, 20]
    assert frames.max() == 20


def test_both_frame_mappings(tmp_path):
    actions = [
        entry("clipX", i, 30 * i, 30 * i + 29, video="parentY", parent=900) for i in range(3)
    ]
    window = read_lta_windows(write(tmp_path, actions), num_input_actions=1, num_future_actions=2)[
        0
    ]
    frames = window.observed_frames(2)  # action 0: 0..29 -> 14, 29
    assert frames.tolist() == [14, 29]
    key, clip_frames = feature_frames(window, frames, "clip")
    assert key == "clipX" and clip_frames.tolist() == [15, 30]  # 0-based clip -> 1-based
    key, video_frames = feature_frames(window, frames, "video")
    # clip frame 0 is parent frame 900 (0-based), i.e. 901 in the 1-based feature numbering
    assert key == "parentY" and video_frames.tolist() == [915, 930]
    assert feature_frames(window, np.array([0]), "video")[1].tolist() == [901]
    with pytest.raises(ValueError, match="keying"):
        feature_frames(window, frames, "frame")
    needed = needed_frames([window], steps_per_action=2, keying="video")
    assert {key: frames.tolist() for key, frames in needed.items()} == {"parentY": [915, 930]}


def test_unannotated_test_file(tmp_path):
    records = [entry("T", i, i, i + 1, labels=False) for i in range(4)]
    windows = read_lta_windows(
        write(tmp_path, records, "fho_lta_test_unannotated.json"),
        num_input_actions=2,
        num_future_actions=2,
    )
    assert [w.id for w in windows] == ["T_1"]
    assert not windows[0].labelled
    assert windows[0].future_verbs.tolist() == [-1, -1]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda r: r[1].pop("action_clip_end_frame"),
            "clip A .*missing key 'action_clip_end_frame'",
        ),
        (lambda r: r[1].update(action_idx=0), "clip A: duplicate action_idx 0"),
        (
            lambda r: r[2].update(verb_label=3),
            "clip A action_idx 2: verb_label 3 is outside the taxonomy",
        ),
        (lambda r: r[0].update(noun_label=-1), "clip A action_idx 0: noun_label -1 is outside"),
        (lambda r: r[2].pop("noun_label"), "clip A .*missing key 'noun_label'"),
        (
            lambda r: r[1].update(action_clip_start_frame="x"),
            "clip A: action_clip_start_frame must be an integer",
        ),
        (lambda r: r[1].update(action_clip_end_frame=-5), "clip A action_idx 1: frames"),
        (lambda r: r[1].update(video_uid="other"), "clip A: entries disagree"),
    ],
)
def test_bad_files_are_one_line_naming_file_and_clip(tmp_path, taxonomy, mutate, message):
    records = [entry("A", i, 10 * i, 10 * i + 5, verb=i % 3, noun=i % 2) for i in range(3)]
    mutate(records)
    path = write(tmp_path, records)
    with pytest.raises(LTAAnnotationError, match=message) as error:
        read_lta_annotations(path, taxonomy=taxonomy)
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_not_json_and_no_clips(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(LTAAnnotationError, match="bad.json: not valid JSON"):
        read_lta_annotations(bad)
    bad.write_text("[]")
    with pytest.raises(LTAAnnotationError, match="'clips' list"):
        read_lta_annotations(bad)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_lta_annotations(tmp_path / "missing.json")


def test_writers_are_the_readers_inverse(tmp_path):
    taxonomy = LTATaxonomy(verbs=("a", "b"), nouns=("x", "y", "z"))
    actions = [LTAAction("C", "V", i, 5 * i, 5 * i + 3, 60, i % 2, i % 3) for i in range(5)]
    write_taxonomy(tmp_path / "tax.json", taxonomy)
    write_lta_annotations(tmp_path / "ann.json", reversed(actions), taxonomy=taxonomy)
    assert read_taxonomy(tmp_path / "tax.json") == taxonomy
    assert read_lta_annotations(tmp_path / "ann.json", taxonomy=taxonomy) == {"C": actions}
    write_lta_annotations(tmp_path / "test.json", actions, labelled=False)
    unlabelled = read_lta_annotations(tmp_path / "test.json")["C"]
    assert [a.verb for a in unlabelled] == [None] * 5


def test_files_with_a_byte_order_mark_read_the_same(tmp_path):
    """Saved as "UTF-8 with BOM" (Windows editors): the same taxonomy, clips and windows."""
    taxonomy = LTATaxonomy(verbs=("a", "b"), nouns=("x", "y", "z"))
    actions = [LTAAction("C", "V", i, 5 * i, 5 * i + 3, 60, i % 2, i % 3) for i in range(5)]
    write_taxonomy(tmp_path / "tax.json", taxonomy)
    write_lta_annotations(tmp_path / "ann.json", actions, taxonomy=taxonomy)
    for name in ("tax.json", "ann.json"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        (tmp_path / f"bom_{name}").write_text(text, encoding="utf-8-sig")
        assert (tmp_path / f"bom_{name}").read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_taxonomy(tmp_path / "bom_tax.json") == taxonomy
    assert read_lta_annotations(tmp_path / "bom_ann.json", taxonomy=taxonomy) == {"C": actions}
