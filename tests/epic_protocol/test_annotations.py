from __future__ import annotations

from pathlib import Path

import pytest

from epic_protocol.annotations import (
    ActionVocabulary,
    AnnotationError,
    Segment,
    convert_frame,
    read_actions_csv,
    read_annotations,
    read_class_ids,
    read_class_names,
    read_epic_csv,
    read_id_list,
    read_many_shot_actions,
    read_rulstm_split,
    read_video_info,
    timestamp_to_frame,
    with_actions,
)
from rulstm.resources import resolve_path


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_ek55_padded_split(tmp_path):
    path = write(
        tmp_path,
        "training.csv",
        "00330, P01_02, 0000000152, 0000000205, 000, 004, 0194\n"
        "00000, P01_01, 0000000004, 0000000101, 002, 008, 1298\n",
    )
    first, second = read_rulstm_split(path)
    assert first == Segment("330", "P01_02", 152, 205, verb=0, noun=4, action=194)
    assert second.uid == "0"
    assert first.participant_id == "P01"


def test_ek100_split_and_test_split(tmp_path):
    train = write(tmp_path, "t.csv", "P01_01_0,P01_01,4,101,3,3,2413\n")
    (segment,) = read_rulstm_split(train)
    assert segment == Segment("P01_01_0", "P01_01", 4, 101, 3, 3, 2413)
    test = write(tmp_path, "test.csv", "01924, P01_11, 0000000001, 0000000056\n")
    (segment,) = read_rulstm_split(test)
    assert segment.uid == "1924" and not segment.labelled and segment.action is None


def test_shipped_splits_parse():
    counts = {
        "ek55/training.csv": 23493,
        "ek55/validation.csv": 4979,
        "ek55/test_seen.csv": 8047,
        "ek55/test_unseen.csv": 2929,
        "ek100/training.csv": 67217,
        "ek100/validation.csv": 9668,
        "ek100/test_timestamps.csv": 13092,
    }
    for name, count in counts.items():
        assert len(read_rulstm_split(resolve_path(f"builtin:{name}"))) == count, name
    ek55 = read_actions_csv(resolve_path("builtin:ek55/actions.csv"))
    ek100 = read_actions_csv(resolve_path("builtin:ek100/actions.csv"))
    assert (ek55.num_actions, ek55.num_verbs, ek55.num_nouns) == (2513, 125, 352)
    assert (ek100.num_actions, ek100.num_verbs, ek100.num_nouns) == (3806, 97, 300)
    assert ek55.names[0] == "take_pan" and ek100.names[0] == "take tap"
    assert ek55.action_of(0, 1) == 0 and ek100.action_of(0, 1) == 1
    assert len(read_class_ids(resolve_path("builtin:ek55/EPIC_many_shot_verbs.csv"))) == 26
    assert len(read_class_ids(resolve_path("builtin:ek55/EPIC_many_shot_nouns.csv"))) == 71
    actions = read_many_shot_actions(resolve_path("builtin:ek55/epic/EPIC_many_shot_actions.csv"))
    assert len(actions) == 819 and (12, 78) in actions
    assert (
        len(read_id_list(resolve_path("builtin:ek100/validation_unseen_participants_ids.csv")))
        == 1065
    )
    assert read_id_list(
        resolve_path("builtin:ek100/epic/EPIC_100_unseen_participant_ids_validation.csv")
    ) == ["P18", "P32"]
    assert len(read_class_names(resolve_path("builtin:ek100/epic/EPIC_100_verb_classes.csv"))) == 97
    assert read_class_names(resolve_path("builtin:ek55/epic/EPIC_noun_classes.csv"))[1] == "pan"


def test_shipped_egtea_vocabulary_and_splits_parse():
    vocabulary = read_actions_csv(resolve_path("builtin:egtea/actions.csv"))
    assert (vocabulary.num_actions, vocabulary.num_verbs, vocabulary.num_nouns) == (106, 19, 51)
    assert vocabulary.names[0] == "Inspect/Read_recipe" and vocabulary.action_of(0, 0) == 0
    assert vocabulary.names[105] == "Put_oil:container" and vocabulary.action_of(5, 35) == 105
    counts = {1: (8299, 2022), 2: (8299, 2022), 3: (8300, 2021)}
    for split, (train_rows, val_rows) in counts.items():
        for name, rows in ((f"training{split}", train_rows), (f"validation{split}", val_rows)):
            path = resolve_path(f"builtin:egtea/{name}.csv")
            segments = read_annotations(path, vocabulary=vocabulary)
            assert len(segments) == rows, name
            # Every row's action id names its own (verb, noun) in the vocabulary.
            assert all(vocabulary.action_of(s.verb, s.noun) == s.action for s in segments)
    first = read_rulstm_split(resolve_path("builtin:egtea/training1.csv"))[0]
    assert (first.uid, first.video_id, first.start_frame, first.end_frame) == (
        "2",
        "P07-R01-PastaSalad",
        2751,
        2808,
    )


def test_headerless_vocabulary_rejects_malformed_rows(tmp_path):
    bad_pair = write(tmp_path, "a.csv", "0, 0_0, Open_fridge\n1, 12, Cut_tomato\n")
    with pytest.raises(AnnotationError, match=r"a.csv:2: column 'verb_noun' must look like"):
        read_actions_csv(bad_pair)
    gap = write(tmp_path, "b.csv", "0, 0_0, Open_fridge\n2, 1_1, Cut_tomato\n")
    with pytest.raises(AnnotationError, match=r"b.csv:2: action ids must run"):
        read_actions_csv(gap)
    short = write(tmp_path, "c.csv", "0, 0_0\n")
    with pytest.raises(AnnotationError, match=r"c.csv:1: a headerless action row has 3"):
        read_actions_csv(short)


EK55_HEADER = (
    "uid,participant_id,video_id,narration,start_timestamp,stop_timestamp,start_frame,"
    "stop_frame,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n"
)


def test_epic_csv_timestamps_match_rulstm_numbering(tmp_path):
    # Real rows (EK55 uid 5 and 6): native 59.94 fps frames 990/1083 would give 495/541 with
    # frame conversion, but the RU-LSTM split files hold floor(timestamp * 30).
    path = write(
        tmp_path,
        "EPIC_train_action_labels.csv",
        EK55_HEADER
        + "5,P01,P01_01,take cup,00:00:16.51,00:00:18.06,990,1083,take,0,cup,29,['cup'],[29]\n"
        + "6,P01,P01_01,take x,00:00:18.17,00:00:21.14,1089,1267,take,0,x,159,\"['x']\",[159]\n",
    )
    vocabulary = ActionVocabulary.from_segments(
        [Segment("a", "v", 1, 2, 0, 29), Segment("b", "v", 1, 2, 0, 159)]
    )
    first, second = read_epic_csv(path, vocabulary=vocabulary)
    assert (first.start_frame, first.end_frame) == (495, 541)
    assert (second.start_frame, second.end_frame) == (545, 634)
    assert (first.verb, first.noun, first.action) == (0, 29, 0)
    assert second.action == 1


def test_epic_csv_native_frames_with_video_info(tmp_path):
    info = write(tmp_path, "info.csv", "video_id,duration,fps,resolution\nP01_11,10.0,50.0,x\n")
    header = "narration_id,participant_id,video_id,start_frame,stop_frame\n"
    path = write(tmp_path, "ek100.csv", header + "P01_11_0,P01,P01_11,1,100\n")
    (segment,) = read_epic_csv(path, video_fps=info)
    assert (segment.start_frame, segment.end_frame) == (1, 60)  # max(1, floor(f * 30 / 50))
    assert read_video_info(info) == {"P01_11": 50.0}
    with pytest.raises(AnnotationError, match="video-info"):
        read_epic_csv(path)
    other = write(tmp_path, "info2.csv", "video,resolution,duration,fps\nP02_01,x,1,60\n")
    with pytest.raises(AnnotationError, match=r"ek100.csv:2: video 'P01_11'"):
        read_epic_csv(path, video_fps=other)


def test_fps_conversion_helpers():
    assert convert_frame(1, native_fps=59.94) == 1
    assert convert_frame(600, native_fps=60.0) == 300
    assert convert_frame(90, native_fps=90.0, fps=30.0) == 30
    assert timestamp_to_frame("00:00:00.00") == 1
    assert timestamp_to_frame("00:01:00.50") == 1815
    assert timestamp_to_frame("01:00:00.00", fps=50) == 180000


def test_read_annotations_dispatches(tmp_path):
    rulstm = write(tmp_path, "a.csv", "1,P01_01,10,20,1,2,3\n")
    assert read_annotations(rulstm)[0].action == 3
    epic = write(
        tmp_path,
        "b.csv",
        EK55_HEADER + "7,P01,P01_01,open x,00:00:01.00,00:00:02.00,60,120,open,2,x,8,[],[]\n",
    )
    (segment,) = read_annotations(epic)
    assert (segment.start_frame, segment.verb, segment.noun, segment.action) == (30, 2, 8, None)
    vocabulary = ActionVocabulary.from_segments([segment])
    assert with_actions([segment], vocabulary)[0].action == 0


def test_vocabulary_keeps_split_action_ids():
    rows = [Segment("1", "v", 1, 2, 3, 4, 1), Segment("2", "v", 1, 2, 0, 9, 0)]
    vocabulary = ActionVocabulary.from_segments(rows)
    assert vocabulary.names == ("0,9", "3,4") and vocabulary.action_of(3, 4) == 1
    with pytest.raises(ValueError, match=r"action 1 is \(3, 4\) in one row and \(5, 5\)"):
        ActionVocabulary.from_segments([*rows, Segment("3", "v", 1, 2, 5, 5, 1)])
    with pytest.raises(ValueError, match=r"action ids \[1\] never occur"):
        ActionVocabulary.from_segments([Segment("1", "v", 1, 2, 3, 4, 2), rows[1]])


def test_vocabulary_from_segments_is_order_free():
    a = [
        Segment("1", "v", 1, 2, 3, 4),
        Segment("2", "v", 1, 2, 0, 9),
        Segment("3", "v", 1, 2, 3, 4),
    ]
    vocabulary = ActionVocabulary.from_segments(a)
    assert vocabulary.names == ("0,9", "3,4")
    assert vocabulary == ActionVocabulary.from_segments(a[::-1])
    assert vocabulary.action_of(5, 5) == -1


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("wide.csv", "1,P01_01,10,20,1,2\n", r"wide.csv:1: a RU-LSTM split row has 7 columns"),
        ("ragged.csv", "1,P01_01,10,20,1,2,3\n2,P01_01,10,20\n", r"ragged.csv:2: expected 7"),
        (
            "text.csv",
            "1,P01_01,10,20,1,2,3\n\n2,P01_01,1x,20,1,2,3\n",
            r"text.csv:3: column 'start_frame'",
        ),
        ("span.csv", "1,P01_01,30,20,1,2,3\n", r"span.csv:1: invalid frame span"),
        ("novideo.csv", "1,,30,40,1,2,3\n", r"novideo.csv:1: empty video_id"),
    ],
)
def test_malformed_split_rows_name_file_and_line(tmp_path, name, text, message):
    with pytest.raises(AnnotationError, match=message):
        read_rulstm_split(write(tmp_path, name, text))


def test_malformed_actions_and_epic_rows(tmp_path):
    bad_header = write(tmp_path, "actions.csv", "id,name,verb,noun\n0,x,0,0\n")
    with pytest.raises(AnnotationError, match=r"actions.csv:1: header"):
        read_actions_csv(bad_header)
    gap = write(tmp_path, "gap.csv", "id,verb,noun,action\n0,0,0,a\n2,0,1,b\n")
    with pytest.raises(AnnotationError, match=r"gap.csv:3: action ids must run"):
        read_actions_csv(gap)
    epic = write(
        tmp_path,
        "epic.csv",
        EK55_HEADER + "7,P01,P01_01,open x,00:00:01.00,bad,60,120,open,2,x,8,[],[]\n",
    )
    with pytest.raises(AnnotationError, match=r"epic.csv:2: timestamp 'bad'"):
        read_epic_csv(epic)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        read_rulstm_split(tmp_path / "missing.csv")
    # A header with a RU-LSTM split's column names is neither format: say that splits have none.
    header = write(tmp_path, "header.csv", "uid,video_id,start_frame,end_frame,verb,noun,action\n")
    with pytest.raises(AnnotationError, match=r"header.csv:1: .*\['stop_frame'\].*has no header"):
        read_annotations(header)


def test_builtin_resolution_errors():
    with pytest.raises(FileNotFoundError, match="not a shipped file"):
        resolve_path("builtin:ek55/nope.csv")


# Files as spreadsheet programs save them ("CSV UTF-8" in Excel and Google Sheets): a UTF-8
# byte-order mark first. Each reader must give the same result with and without it.
BOM_FILES = {
    "ek55_split": ("00000, P01_01, 0000000004, 0000000101, 002, 008, 1298\n", read_rulstm_split),
    "ek100_split": ("P01_01_0,P01_01,4,101,3,3,2413\n", read_rulstm_split),
    "egtea_split": ("2,P07-R01-PastaSalad,2751,2808,3,10,5\n", read_rulstm_split),
    "test_split": ("01924, P01_11, 0000000001, 0000000056\n", read_annotations),
    "ek55_epic": (
        EK55_HEADER + "0,P01,P01_01,open x,00:00:01.00,00:00:02.00,60,120,open,2,x,8,[],[]\n",
        read_annotations,
    ),
    "ek100_epic": (
        "narration_id,participant_id,video_id,start_timestamp,stop_timestamp,verb_class,"
        "noun_class\nP01_01_0,P01,P01_01,00:00:01.00,00:00:02.00,2,8\n",
        read_epic_csv,
    ),
    "ek55_actions": ("id,action,verb,noun\n0,take cup,0,29\n", read_actions_csv),
    "ek100_actions": ("id,verb,noun,action\n0,0,29,take cup\n", read_actions_csv),
    "egtea_actions": ("0, 0_0, Inspect/Read_recipe\n", read_actions_csv),
    "video_info": ("video_id,duration,fps,resolution\nP01_11,10.0,50.0,x\n", read_video_info),
    "ek55_video_info": ("video,resolution,duration,fps\nP01_11,x,10.0,59.94\n", read_video_info),
    "many_shot_verbs": ("verb_class,verb\n0,take\n3,open\n", read_class_ids),
    "tail_nouns": ("noun\n7\n9\n", read_class_ids),
    "many_shot_actions": ("verb_class,noun_class,action\n0,29,take cup\n", read_many_shot_actions),
    "unseen_ids": ("participant_id\nP01\nP02\n", read_id_list),
    "validation_ids": ("0\n12\n", read_id_list),
    "verb_classes": (
        "id,key,instances,category\n0,take,['take'],x\n1,put,[],x\n",
        read_class_names,
    ),
}


@pytest.mark.parametrize("name", sorted(BOM_FILES))
def test_every_reader_ignores_a_utf8_byte_order_mark(tmp_path, name):
    text, reader = BOM_FILES[name]
    plain = tmp_path / f"{name}.csv"
    plain.write_text(text, encoding="utf-8")
    marked = tmp_path / f"{name}_bom.csv"
    marked.write_text(text, encoding="utf-8-sig")
    assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
    expected = reader(plain)
    assert reader(marked) == expected
    assert "\ufeff" not in repr(expected)


def test_bom_uid_and_id_list_header(tmp_path):
    """The reported cases: uid '0' not '\\ufeff0', an id-list header not taken as an id, an
    EPIC-100 CSV whose first header cell is narration_id."""
    split = tmp_path / "validation.csv"
    split.write_text("00000, P01_01, 0000000004, 0000000101, 002, 008, 1298\n", "utf-8-sig")
    assert read_rulstm_split(split)[0].uid == "0"
    ids = tmp_path / "EPIC_100_unseen_participant_ids_test.csv"
    ids.write_text("participant_id\nP33\n", "utf-8-sig")
    assert read_id_list(ids) == ["P33"]
    epic = tmp_path / "EPIC_100_validation.csv"
    epic.write_text(
        "narration_id,video_id,start_timestamp,stop_timestamp\nP01_01_0,P01_01,0:0:1.0,0:0:2.0\n",
        "utf-8-sig",
    )
    assert [s.uid for s in read_annotations(epic)] == ["P01_01_0"]


def test_non_utf8_annotation_names_file_and_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"0,P01_01,1,2\n1,P01_\xe9,1,2\n")
    with pytest.raises(AnnotationError, match=r"latin1.csv:\d+: not UTF-8 text"):
        read_rulstm_split(path)
