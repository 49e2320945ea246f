"""rulstm-demo: a tiny video through the tiny extraction and a tiny random RU-LSTM, written
back as an H.264 MP4 with the overlay; clear errors on bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from epic_protocol import Segment
from rulstm.online import OnlinePrediction
from rulstm_apps.demo import DemoOptions, main, parse_options, run_demo
from rulstm_apps.demo_inputs import StepClock
from rulstm_apps.demo_loop import panel_content
from rulstm_apps.labels import ActionNames, VideoTimeline
from rulstm_apps.overlay import BACKGROUND, Box, Layout, PanelContent, detection_boxes, render


# ----------------------------------------------------------------------------- end to end
def test_fusion_demo_writes_a_playable_video_with_the_overlay(
    make_checkpoint, demo_args, actions_csv, tmp_path, tiny, decode_all
):
    annotations = tmp_path / "validation.csv"
    # RU-LSTM split rows (30 fps frames) of this video (id = file stem) and of another one.
    annotations.write_text(
        "00000, P01_01, 0000000010, 0000000030, 001, 004, 0004\n"
        "00001, P01_01, 0000000040, 0000000055, 002, 005, 0005\n"
        "00002, P02_03, 0000000001, 0000000020, 000, 000, 0000\n"
    )
    checkpoint = make_checkpoint("fusion")
    out = tmp_path / "out" / "demo.mp4"
    options = parse_options(
        demo_args(
            checkpoint, "--annotations", str(annotations), "--actions", str(actions_csv), out=out
        )
    )
    summary = run_demo(options)

    # 2 s at 30 fps: 60 frames; a step at frames 7, 15, 22, 30, 37, 45, 52, 60.
    assert (summary.frames, summary.steps) == (tiny.frames, 8)
    frames, facts = decode_all(out)
    # 64x48 scaled up to 360 rows (480 wide) beside the 330-pixel panel.
    assert len(frames) == tiny.frames
    assert frames[0].shape == (360, 480 + 330, 3) == (summary.height, summary.width, 3)
    assert facts == {"codec": "h264", "pix_fmt": "yuv420p", "fps": 30.0}
    # The panel holds text and bars (not only its background) once predictions exist.
    panel = frames[-1][:, 480:].astype(int)
    assert (np.abs(panel - np.array(BACKGROUND)).max(axis=-1) > 60).mean() > 0.02


def test_single_branch_demo_reads_alpha_and_modality_from_the_checkpoint(
    make_checkpoint, demo_args, tmp_path, decode_all, capsys
):
    checkpoint = make_checkpoint(
        "rgb", hyper_parameters={"modality": "rgb", "alpha": 0.5, "anticipation_steps": 4}
    )
    out = tmp_path / "rgb.mp4"
    args = demo_args(checkpoint, "--duration", "1.0", "--every", "2", "--min_height", "96", out=out)
    assert main(args) == 0
    # The checkpoint records no feature backbone (trained before they were recorded): a warning.
    err = capsys.readouterr().err
    assert f"rulstm-demo: warning: {checkpoint} records no feature backbone" in err
    frames, _ = decode_all(out)
    assert len(frames) == 30  # --duration 1.0
    assert frames[0].shape[0] == 96  # --min_height


def test_branch_modality_is_inferred_from_a_single_modality_config(
    make_checkpoint, demo_args, tmp_path, decode_all
):
    checkpoint = make_checkpoint("flow")  # records neither its modality nor alpha
    out = tmp_path / "flow.mp4"
    assert main([*demo_args(checkpoint, "--duration", "0.5", out=out), "--modalities", "flow"]) == 0
    frames, _ = decode_all(out)
    assert len(frames) == 15


def test_epic_csv_ground_truth_with_verb_and_noun_names(tmp_path):
    csv = tmp_path / "EPIC_100_validation.csv"
    csv.write_text(
        "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,"
        "stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,"
        "all_nouns,all_noun_classes\n"
        "P01_01_0,P01,P01_01,00:00:00.5,00:00:01.00,00:00:02.00,50,100,open tap,open,1,tap,0,\"['tap']\",[0]\n"
        "P01_01_1,P01,P01_01,00:00:03.0,00:00:03.00,00:00:04.00,150,200,take cup,take,0,cup,1,\"['cup']\",[1]\n"
    )
    verbs, nouns = tmp_path / "verbs.csv", tmp_path / "nouns.csv"
    verbs.write_text("id,key\n0,take\n1,open\n")
    nouns.write_text("id,key\n0,tap\n1,cup\n")
    names = ActionNames.from_files(num_classes=5, verb_classes=verbs, noun_classes=nouns)
    timeline = VideoTimeline.from_file(csv, video_id="P01_01", fps=30)
    assert [s.start_frame for s in timeline.segments] == [30, 90]
    assert timeline.current(45) is not None and names.segment(timeline.current(45)) == "open tap"
    upcoming = timeline.upcoming(45)
    assert names.segment(upcoming.segment) == "take cup" and upcoming.seconds == pytest.approx(1.5)
    assert timeline.current(70) is None and timeline.upcoming(95) is None
    assert names.action(3) == "action 3"  # no actions.csv: numbered


def test_panel_shows_predictions_weights_and_ground_truth(actions_csv):
    names = ActionNames.from_files(num_classes=12, actions=actions_csv)
    timeline = VideoTimeline(
        [Segment("0", "v", 10, 30, 1, 4, 4), Segment("1", "v", 40, 55, 2, 5, 5)], fps=30
    )
    logits = torch.full((2, 12), -5.0)
    logits[:, 5], logits[:, 4] = 3.0, 2.0  # action 5 first, then 4
    prediction = OnlinePrediction(
        step=0,
        times=(1.25, 1.0),
        logits=logits,
        probabilities=logits.softmax(-1),
        weights={"rgb": torch.tensor([0.2, 0.7]), "obj": torch.tensor([0.8, 0.3])},
    )
    options = DemoOptions(video=Path("v.mp4"), checkpoint=Path("c.ckpt"), top_k=3)
    content = panel_content(
        frame=20, fps=30, steps=3, prediction=prediction, options=options, names=names,
        timeline=timeline, first_step_s=0.25,
    )  # fmt: skip
    assert [name for name, _ in content.predictions][:2] == ["open thing5", "put thing4"]
    assert content.weights == pytest.approx({"rgb": 0.7, "obj": 0.3})  # at the 1.0 s horizon
    assert content.current == "put thing4"
    assert content.upcoming == "open thing5 in 0.7 s"
    assert content.hits == frozenset({0})  # the upcoming action is ranked first
    hidden = panel_content(
        frame=20, fps=30, steps=3, prediction=prediction, names=names, timeline=timeline,
        options=DemoOptions(video=Path("v.mp4"), checkpoint=Path("c.ckpt"), overlay_gt=False),
        first_step_s=0.25,
    )  # fmt: skip
    assert not hidden.show_ground_truth and not hidden.hits
    # Drawn: the ground-truth section adds pixels to the panel.
    layout = Layout.for_video(64, 48)
    frame = np.zeros((48, 64, 3), np.uint8)
    with_gt = render(frame, content, layout)
    without = render(frame, hidden, layout)
    assert with_gt.shape == (360, 810, 3)
    assert (with_gt != without).any()


def test_overlay_draws_boxes_and_scales_layouts():
    assert Layout.for_video(1920, 1080, max_height=720).width == 1280 + 660
    assert Layout.for_video(426, 240).height == 360
    layout = Layout.for_video(101, 51)  # odd sizes: even output for yuv420p
    assert layout.width % 2 == 0 and layout.height % 2 == 0
    frame = np.full((48, 64, 3), 40, np.uint8)
    content = PanelContent(time_s=0.0, horizon=1.0, boxes=(Box(10, 10, 30, 30, "red", 0.9),))
    plain = render(frame, PanelContent(time_s=0.0, horizon=1.0), Layout.for_video(64, 48))
    boxed = render(frame, content, Layout.for_video(64, 48), boxes_image_size=(64, 48))
    assert (plain[:, :480] != boxed[:, :480]).any()
    with pytest.raises(ValueError, match="RGB uint8"):
        render(np.zeros((4, 4), np.uint8), content, layout)


def test_detection_boxes_keep_the_best_above_the_threshold():
    boxes = np.array([[0, 0, 4, 4], [1, 1, 5, 5], [2, 2, 6, 6], [3, 3, 7, 7]], np.float32)
    labels = np.array([0, 1, 7, 1])
    scores = np.array([0.2, 0.9, 0.6, 0.5], np.float32)
    drawn = detection_boxes(boxes, labels, scores, class_names=["cup", "tap"], threshold=0.3)
    assert [(b.label, b.score, b.x1) for b in drawn] == [
        ("tap", pytest.approx(0.9), 1.0),
        ("7", pytest.approx(0.6), 2.0),  # an index outside the class names: the number
        ("tap", pytest.approx(0.5), 3.0),
    ]
    best = detection_boxes(
        boxes, labels, scores, class_names=["cup", "tap"], threshold=0.0, limit=2
    )
    assert [b.x1 for b in best] == [1.0, 2.0]


def test_step_clock_follows_the_sampling_rounding():
    clock = StepClock(alpha=0.25, fps=30)
    assert [f for f in range(1, 61) if clock.steps_at(f)] == [7, 15, 22, 30, 37, 45, 52, 60]
    slow = StepClock(alpha=0.25, fps=2)  # several steps can fall on one frame
    assert [slow.steps_at(f) for f in (1, 2)] == [3, 2]  # frame 0 folds into frame 1


def test_skipping_frames_between_steps_gives_the_same_step_features(tiny_video, tiny, one_thread):
    """The demo computes features only on step frames (and flow only where the next stack
    reads it): the step features must equal those of an extractor computing every frame."""
    from feature_extraction import StreamingExtractor, decode_video, load_config
    from rulstm_apps.demo_inputs import FramePusher

    config = load_config(tiny.config, tiny.overrides)
    everything, skipping = StreamingExtractor(config), StreamingExtractor(config)
    clock = StepClock(alpha=0.25, fps=30)
    pusher = FramePusher(skipping, clock)
    compared = 0
    for decoded in decode_video(tiny_video, fps=30):
        if decoded.frame > 30:
            break
        full = everything.push(decoded.image)
        due = clock.steps_at(decoded.frame) > 0
        pushed = pusher.push(decoded.image, frame=decoded.frame, due=due)
        if not due:
            assert pushed == {}
            continue
        for modality in ("rgb", "flow", "obj"):
            np.testing.assert_allclose(pushed[modality], full[modality], rtol=1e-5, atol=1e-6)
        compared += 1
    assert compared == 4  # frames 7, 15, 22, 30


def test_the_demo_runs_the_models_only_for_what_the_steps_read(
    make_checkpoint, demo_args, tmp_path, tiny, monkeypatch
):
    """Every frame is shown, but the RGB backbone, the flow backbone and the detector run once
    per step (on the step frame) and the optical flow only on the fields the steps' stacks read
    (the ``stack`` frames ending at each step frame), as the RU-LSTM sampling reads them."""
    from feature_extraction.flow import DISFlow
    from feature_extraction.models import FeatureComputer

    rows: dict[str, int] = {"rgb": 0, "flow": 0, "obj": 0}
    fields: list[tuple[int, ...]] = []  # (H, W) of the frames of each estimated field

    def counted(name, method):
        def run(self, images, *args, **kwargs):
            rows[name] += len(images)
            return method(self, images, *args, **kwargs)

        return run

    for name, attribute in (
        ("rgb", "rgb_features"),
        ("flow", "flow_features"),
        ("obj", "object_features"),
    ):
        method = getattr(FeatureComputer, attribute)
        monkeypatch.setattr(FeatureComputer, attribute, counted(name, method))
    estimate = DISFlow.__call__

    def counted_flow(self, previous, current):
        fields.append(current.shape[:2])
        return estimate(self, previous, current)

    monkeypatch.setattr(DISFlow, "__call__", counted_flow)
    summary = run_demo(parse_options(demo_args(make_checkpoint("fusion"))))
    # 60 frames shown; steps on frames 7, 15, 22, 30, 37, 45, 52, 60 (0.25 s at 30 fps).
    assert (summary.frames, summary.steps) == (tiny.frames, 8)
    assert rows == {"rgb": 8, "flow": 8, "obj": 8}  # not one per frame (60)
    # The 5 fields of each stack (frames k-4 .. k of step frame k): 40 of the 59 pairs.
    assert len(fields) == 8 * 5


def test_the_models_leave_a_core_for_decoding_and_encoding(make_checkpoint, demo_args, monkeypatch):
    """threads: null (cpu_small.yaml) runs the models on every usable core but one: on a
    2-core machine torch's default of 2 threads contended with decoding and x264 (and spun)."""
    from rulstm_apps import demo_loop

    monkeypatch.setattr(demo_loop.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert demo_loop.demo_threads(None) == 1
    assert demo_loop.demo_threads(3) == 3  # the config's number is kept
    # 4 usable cores (not this machine's count, torch's default): 3 model threads.
    monkeypatch.setattr(demo_loop.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    seen: list[int] = []
    before = torch.get_num_threads()
    args = [*demo_args(make_checkpoint("fusion"), "--duration", "0.5"), "--threads", "null"]
    run_demo(parse_options(args), on_step=lambda *_: seen.append(torch.get_num_threads()))
    assert seen and set(seen) == {3}
    assert torch.get_num_threads() == before  # restored


# ----------------------------------------------------------------------------- errors
def test_bad_video_paths_are_named(make_checkpoint, demo_args, tmp_path, capsys):
    checkpoint = make_checkpoint("fusion")
    missing = tmp_path / "nothing.mp4"
    args = demo_args(checkpoint)
    args[args.index("--video") + 1] = str(missing)
    assert main(args) == 1
    assert str(missing) in capsys.readouterr().err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    args[args.index("--video") + 1] = str(broken)
    assert main(args) == 1
    assert str(broken) in capsys.readouterr().err


def test_bad_checkpoints_are_named(make_checkpoint, demo_args, tmp_path, capsys):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x00\x01 not a checkpoint")
    assert main(demo_args(garbage)) == 1
    assert f"{garbage}: not a readable checkpoint" in capsys.readouterr().err

    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    assert main(demo_args(plain)) == 1
    assert "does not describe its network" in capsys.readouterr().err

    assert main(demo_args(tmp_path / "absent.ckpt")) == 1
    assert "checkpoint not found" in capsys.readouterr().err

    branch = make_checkpoint("rgb")  # records no modality; the config extracts three
    assert main(demo_args(branch)) == 1
    assert "--modality" in capsys.readouterr().err


def test_checkpoint_that_does_not_fit_the_extraction_config(make_checkpoint, demo_args, capsys):
    wide = make_checkpoint("fusion", dims={"rgb": 1024, "flow": 512, "obj": 8}, name="wide.ckpt")
    assert main(demo_args(wide)) == 1
    err = capsys.readouterr().err
    assert str(wide) in err and "rgb: extractor 512, model 1024" in err

    fused = make_checkpoint("fusion")
    assert main([*demo_args(fused), "--modalities", "rgb"]) == 1
    assert "missing ['flow', 'obj']" in capsys.readouterr().err


def test_checkpoint_weights_that_do_not_fit_are_named(make_checkpoint, tmp_path):
    from rulstm_apps.demo_errors import DemoError
    from rulstm_apps.demo_model import load_model

    path = make_checkpoint("fusion")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"].pop(next(iter(checkpoint["state_dict"])))
    torch.save(checkpoint, path)
    with pytest.raises(DemoError, match=f"{path} does not fit RULSTMFusion: missing"):
        load_model(path, device=torch.device("cpu"))


# ----------------------------------------------------------------------------- released-model path
def _tiny_run(tiny_video, tmp_path, *extra: str) -> list[str]:
    """Demo arguments with extraction options given among the demo's (no '--')."""
    return [
        "--video", str(tiny_video), "--out", str(tmp_path / "demo.mp4"),
        "--extract-config", str(REPO_TINY_CONFIG), "--progress", "false",
        *TINY_EXTRACTION, *extra,
    ]  # fmt: skip


REPO_TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "extract" / "tiny.yaml"
TINY_EXTRACTION = [
    "--decode.width", "64", "--decode.height", "48", "--rgb.input-size", "[32, 32]",
    "--flow.input_size", "[32, 32]", "--threads", "1",
]  # fmt: skip


def _records(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_extraction_options_mix_with_the_demo_options():
    from rulstm_apps.demo import parse_options

    options = parse_options(
        ["--video", "v.mp4", "--checkpoint", "rgb.ckpt", "--rgb.weights", "TSN-rgb.pth.tar",
         "--modalities", "rgb", "flow", "--top-k", "3", "--checkpoint", "flow.ckpt",
         "--flow.bound", "-20", "--no-overlay-gt", "--", "--threads", "1"]
    )  # fmt: skip
    assert options.checkpoints == (Path("rgb.ckpt"), Path("flow.ckpt"))
    assert options.top_k == 3 and not options.overlay_gt and options.overlay_detections
    assert list(options.extract_overrides) == [
        "--rgb.weights", "TSN-rgb.pth.tar", "--modalities", "rgb", "flow",
        "--flow.bound", "-20", "--threads", "1",
    ]  # fmt: skip


def test_help_shows_the_real_defaults_of_the_negated_flags(capsys):
    with pytest.raises(SystemExit):
        parse_options(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--no-overlay-gt, --no_overlay_gt Hide the ground truth. Off by default" in out
    assert (
        "--no-detections, --no_detections Do not draw the object detector's boxes. Off by default"
        in out
    )
    assert "(same as --overlay_gt false). (default: False)" in out
    assert "--overlay_gt {true,false} Show the ground truth" in out and "default: True" in out


def test_fusion_without_obj_averages_the_other_branches_and_says_so(
    make_checkpoint, tiny_video, tmp_path, caplog
):
    import logging

    checkpoint = make_checkpoint("fusion")  # rgb, flow, obj with MATT
    jsonl = tmp_path / "predictions.jsonl"
    args = _tiny_run(tiny_video, tmp_path, "--checkpoint", str(checkpoint), "--modalities",
                     "rgb", "flow", "--predictions-out", str(jsonl), "--top_k", "3")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="rulstm_apps.demo"):
        assert main(args) == 0
    assert "no obj features" in caplog.text and "fusing rgb, flow by averaging" in caplog.text
    records = _records(jsonl)
    assert [r["frame"] for r in records] == [7, 15, 22, 30, 37, 45, 52, 60]
    assert records[0]["time_s"] == pytest.approx(7 / 30) and records[0]["step"] == 0
    assert {r["fusion"] for r in records} == {"average"}
    first = records[0]["anticipations"]
    assert [a["time_s"] for a in first] == [2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25]
    for anticipation in first:
        assert anticipation["weights"] is None  # no MATT weights for an average
        probabilities = [entry["probability"] for entry in anticipation["top_k"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert all(0 <= entry["action"] < 12 for entry in anticipation["top_k"])
    assert not (tmp_path / "predictions.jsonl.partial").exists()


def test_the_panel_states_a_fallback_fusion():
    layout = Layout.for_video(64, 48)
    frame = np.zeros((48, 64, 3), np.uint8)
    plain = PanelContent(time_s=1.0, horizon=1.0, predictions=[("a", 0.5)])
    noted = PanelContent(
        time_s=1.0, horizon=1.0, predictions=[("a", 0.5)], fusion_note="no obj: rgb+flow averaged"
    )
    assert (render(frame, plain, layout) != render(frame, noted, layout)).any()


def test_several_branch_checkpoints_are_averaged(make_checkpoint, tiny_video, tmp_path, caplog):
    rgb = make_checkpoint("rgb", name="rgb_best.ckpt")
    flow = make_checkpoint("flow", name="flow_best.ckpt")
    jsonl = tmp_path / "out" / "steps.jsonl"
    args = _tiny_run(tiny_video, tmp_path, "--checkpoint", str(rgb), "--checkpoint", str(flow),
                     "--modalities", "rgb", "flow", "--predictions_out", str(jsonl),
                     "--duration", "1.0")  # fmt: skip
    assert main(args) == 0
    records = _records(jsonl)
    assert len(records) == 4 and {r["fusion"] for r in records} == {"average"}
    assert len(records[-1]["anticipations"][0]["top_k"]) == 5


def test_detections_give_the_obj_features_of_a_fusion(make_checkpoint, tiny_video, tmp_path):
    dims = {"rgb": 512, "flow": 512, "obj": 6}
    checkpoint = make_checkpoint("fusion", dims=dims, name="fusion.ckpt")
    entries = np.empty(60, dtype=object)
    for index in range(60):
        entries[index] = np.array([[index % 6, 0, 0, 10, 10, 0.5], [2, 0, 0, 5, 5, 0.25]])
    npy = tmp_path / "P01_01.npy"
    np.save(npy, entries, allow_pickle=True)
    jsonl = tmp_path / "matt.jsonl"
    args = _tiny_run(tiny_video, tmp_path, "--checkpoint", str(checkpoint), "--modalities",
                     "rgb", "flow", "--detections", str(npy), "--predictions-out", str(jsonl))  # fmt: skip
    assert main(args) == 0
    records = _records(jsonl)
    assert len(records) == 8 and {r["fusion"] for r in records} == {"matt"}
    for anticipation in records[3]["anticipations"]:
        weights = anticipation["weights"]
        assert set(weights) == {"rgb", "flow", "obj"}
        assert sum(weights.values()) == pytest.approx(1.0, abs=1e-5)

    # A detection file shorter than the video fails naming it, and leaves no predictions file.
    np.save(npy, entries[:20], allow_pickle=True)
    jsonl.unlink()
    assert main(args) == 1
    assert not jsonl.exists() and not jsonl.with_name("matt.jsonl.partial").exists()


def test_detections_of_another_size_or_for_a_branch_are_refused(
    make_checkpoint, tiny_video, tmp_path, capsys
):
    entries = np.empty(60, dtype=object)
    for index in range(60):
        entries[index] = np.array([[7, 0, 0, 10, 10, 0.5]])  # class 7 of an 8-class detector
    npy = tmp_path / "P01_01.npy"
    np.save(npy, entries, allow_pickle=True)
    narrow = make_checkpoint("fusion", dims={"rgb": 512, "flow": 512, "obj": 6}, name="n.ckpt")
    args = _tiny_run(tiny_video, tmp_path, "--checkpoint", str(narrow), "--modalities", "rgb",
                     "flow", "--detections", str(npy))  # fmt: skip
    assert main(args) == 1
    assert f"--detections: {npy}: frame 1: class 7 is not an integer in [0, 6)" in (
        capsys.readouterr().err
    )
    branch = make_checkpoint("rgb", hyper_parameters={"modality": "rgb"})
    args = _tiny_run(tiny_video, tmp_path, "--checkpoint", str(branch), "--detections", str(npy))
    assert main(args) == 1
    assert "reads no Obj features" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the released models
def _authors_rulstm_checkpoint(
    path: Path, dims: dict[str, int], *, hidden=16, classes=2513
) -> Path:
    """A random RU-LSTM fusion in the authors' .pth.tar layout (branches.i.*, MATT.*), with
    numpy scalars as their files have."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for index, dim in enumerate(dims.values()):
        for lstm in ("rolling_lstm.lstm", "unrolling_lstm"):
            for name, shape in (("weight_ih", (4 * hidden, dim)), ("weight_hh", (4 * hidden, hidden)),
                                ("bias_ih", (4 * hidden,)), ("bias_hh", (4 * hidden,))):  # fmt: skip
                state[f"branches.{index}.{lstm}.{name}_l0"] = (
                    torch.randn(shape, generator=generator) * 0.1
                )
        state[f"branches.{index}.classifier.1.weight"] = torch.randn(
            classes, hidden, generator=generator
        )
        state[f"branches.{index}.classifier.1.bias"] = torch.zeros(classes)
    sizes = [
        2 * len(dims) * hidden,
        2 * len(dims) * hidden // 4,
        2 * len(dims) * hidden // 8,
        len(dims),
    ]
    for layer, (fan_in, fan_out) in zip((0, 3, 6), zip(sizes, sizes[1:])):
        state[f"MATT.{layer}.weight"] = torch.randn(fan_out, fan_in, generator=generator) * 0.1
        state[f"MATT.{layer}.bias"] = torch.zeros(fan_out)
    torch.save(
        {"state_dict": state, "epoch": 3, "perf": np.float64(1.0), "best_perf": np.float32(1.0)},
        path,
    )
    return path


def _authors_tsn_checkpoint(path: Path, *, channels: int) -> Path:
    """A random BN-Inception in the authors' TSN layout: module.base_model.* plus the
    module.new_fc head."""
    from feature_extraction import BNInception

    torch.manual_seed(channels)
    state = {
        f"module.base_model.{k}": v
        for k, v in BNInception(in_channels=channels).state_dict().items()
    }
    head = torch.nn.Linear(1024, 2513)
    state.update({f"module.new_fc.{k}": v for k, v in head.state_dict().items()})
    torch.save({"epoch": 0, "arch": "BNInception", "state_dict": state}, path)
    return path


@pytest.mark.slow
def test_the_released_models_on_a_video_with_tsn_features(tiny_video, tmp_path):
    """rulstm-import checkpoint on an authors' fusion .pth.tar, then the demo with
    rulstm_tsn.yaml and TSN checkpoints in the authors' layout (random weights), the Obj
    features from an authors'-format detection file: MP4 and JSONL written."""
    from rulstm.compat.cli import main as import_main

    reference = _authors_rulstm_checkpoint(
        tmp_path / "RULSTM-anticipation_0.25_6_8_fusion_best.pth.tar",
        {"rgb": 1024, "flow": 1024, "obj": 352},
    )
    fusion = tmp_path / "fusion.ckpt"
    assert import_main(["checkpoint", "--in", str(reference), "--out", str(fusion)]) == 0
    entries = np.empty(60, dtype=object)
    for index in range(60):
        entries[index] = np.array([[index % 352, 1, 2, 30, 40, 0.9], [17, 5, 5, 9, 9, 0.2]])
    detections = tmp_path / "P01_01.npy"
    np.save(detections, entries, allow_pickle=True)
    out, jsonl = tmp_path / "released.mp4", tmp_path / "released.jsonl"
    args = [
        "--video", str(tiny_video), "--checkpoint", str(fusion), "--detections", str(detections),
        "--extract-config", str(REPO_TINY_CONFIG.parent / "rulstm_tsn.yaml"),
        "--rgb.weights", str(_authors_tsn_checkpoint(tmp_path / "TSN-rgb.pth.tar", channels=3)),
        "--flow.weights", str(_authors_tsn_checkpoint(tmp_path / "TSN-flow.pth.tar", channels=10)),
        "--flow.method", "dis", "--device", "cpu", "--threads", "1", "--duration", "0.5",
        "--actions", "builtin:ek55/actions.csv", "--out", str(out), "--predictions-out", str(jsonl),
        "--progress", "false",
    ]  # fmt: skip
    assert main(args) == 0
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 15
    records = _records(jsonl)
    assert [r["frame"] for r in records] == [7, 15] and {r["fusion"] for r in records} == {"matt"}
    first = records[0]["anticipations"][4]
    assert first["time_s"] == 1.0 and set(first["weights"]) == {"rgb", "flow", "obj"}
    assert all(" " in entry["name"] for entry in first["top_k"])  # EK55 'verb noun' names


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_weights_follow_native_bf16(
    make_checkpoint, demo_args, native, expected, force_bf16_native
):
    from rulstm_apps.demo_model import load_model

    force_bf16_native(native)
    checkpoint = make_checkpoint("rgb", hyper_parameters={"modality": "rgb"})
    assert parse_options(demo_args(checkpoint, "--weights", "auto")).weights == "auto"
    assert parse_options(demo_args(checkpoint)).weights == "fp32"
    model = load_model(checkpoint, device=torch.device("cpu"), weights="auto")
    assert model.anticipator.weights == expected


def test_a_checkpoint_trained_on_another_backbone_is_refused(make_checkpoint, demo_args, capsys):
    from epic_protocol.backbones import CHECKPOINT_KEY

    fused = make_checkpoint("fusion")
    checkpoint = torch.load(fused, weights_only=True)
    dino = {"backbone": "timm:vit_small_patch14_dinov2", "weights": "/w", "revision": None,
            "clip_length": 1, "clip_stride": 1, "dim": 512}  # fmt: skip
    checkpoint[CHECKPOINT_KEY] = {"rgb": dino, "flow": None, "obj": None}
    torch.save(checkpoint, fused)
    assert main(demo_args(fused)) == 1
    err = capsys.readouterr().err
    assert "timm:vit_small_patch14_dinov2" in err and "resnet18" in err and str(fused) in err


def test_features_of_frames_decoded_at_another_size_are_refused(make_checkpoint, demo_args, capsys):
    """A fusion of an RGB branch from one extraction config with the flow of another (e.g.
    dinov2.yaml at 456x256 and cpu_small.yaml's flow at 228x128): a demo config decoding at
    one size would compute the flow of other frames than training read. The checkpoint's flow
    record, the demo's own but at 228x128, is refused naming both sizes."""
    from epic_protocol.backbones import CHECKPOINT_KEY
    from feature_extraction import backbone_record, build_models
    from rulstm_apps.demo_inputs import load_extract_config

    from .conftest import TINY_CONFIG, TINY_OVERRIDES

    models = build_models(load_extract_config(TINY_CONFIG, TINY_OVERRIDES))
    flow = json.loads(json.dumps(backbone_record(models, "flow")))  # as a file stores it
    assert flow["decode_size"] == [64, 48] and flow["flow_method"]
    fused = make_checkpoint("fusion")
    checkpoint = torch.load(fused, weights_only=True)
    checkpoint[CHECKPOINT_KEY] = {"rgb": None, "flow": {**flow, "decode_size": [228, 128]}}
    torch.save(checkpoint, fused)
    assert main(demo_args(fused)) == 1
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
    assert "frames decoded at 228x128" in line and "frames decoded at 64x48" in line
    assert str(fused) in line


def test_demo_runs_on_a_video_foundation_backbone(make_checkpoint, demo_args, tmp_path, decode_all):
    """The demo end to end with RGB from a tiny random VideoMAE (saved with save_pretrained,
    loaded by path): causal clips from the streaming ring buffer, fused with flow and obj."""
    transformers = pytest.importorskip("transformers")
    from epic_protocol.backbones import CHECKPOINT_KEY

    folder = tmp_path / "videomae"
    config = transformers.VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.VideoMAEModel(config).save_pretrained(folder)
    transformers.VideoMAEVideoProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)
    fused = make_checkpoint("fusion", dims={"rgb": 32, "flow": 512, "obj": 8})
    checkpoint = torch.load(fused, weights_only=True)
    record = {"backbone": "hf:videomae", "weights": str(folder), "revision": None,
              "clip_length": 4, "clip_stride": 2, "dim": 32}  # fmt: skip
    checkpoint[CHECKPOINT_KEY] = {"rgb": record, "flow": None, "obj": None}
    torch.save(checkpoint, fused)
    out = tmp_path / "foundation.mp4"
    args = demo_args(fused, "--duration", "1.0", out=out)
    args += ["--rgb.backbone", "hf:videomae", "--rgb.weights", str(folder),
             "--rgb.input_size", "null", "--rgb.clip_stride", "2"]  # fmt: skip
    assert main(args) == 0
    frames, _ = decode_all(out)
    assert len(frames) == 30
