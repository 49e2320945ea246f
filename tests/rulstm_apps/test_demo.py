"""rulstm-demo: a tiny video through the tiny extraction and a tiny random RU-LSTM, written
back as an H.264 MP4 with the overlay; clear errors on bad inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from epic_protocol import Segment
from rulstm.online import OnlinePrediction
from rulstm_apps.demo import DemoOptions, StepClock, _panel, main, parse_options, run_demo
from rulstm_apps.labels import ActionNames, VideoTimeline
from rulstm_apps.overlay import BACKGROUND, Box, Layout, PanelContent, render


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
    make_checkpoint, demo_args, tmp_path, decode_all
):
    checkpoint = make_checkpoint(
        "rgb", hyper_parameters={"modality": "rgb", "alpha": 0.5, "anticipation_steps": 4}
    )
    out = tmp_path / "rgb.mp4"
    args = demo_args(checkpoint, "--duration", "1.0", "--every", "2", "--min_height", "96", out=out)
    assert main(args) == 0
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
    content = _panel(
        frame=20, fps=30, steps=3, prediction=prediction, options=options, names=names,
        timeline=timeline, first_step_s=0.25,
    )  # fmt: skip
    assert [name for name, _ in content.predictions][:2] == ["open thing5", "put thing4"]
    assert content.weights == pytest.approx({"rgb": 0.7, "obj": 0.3})  # at the 1.0 s horizon
    assert content.current == "put thing4"
    assert content.upcoming == "open thing5 in 0.7 s"
    assert content.hits == frozenset({0})  # the upcoming action is ranked first
    hidden = _panel(
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


def test_step_clock_follows_the_sampling_rounding():
    clock = StepClock(alpha=0.25, fps=30)
    assert [f for f in range(1, 61) if clock.steps_at(f)] == [7, 15, 22, 30, 37, 45, 52, 60]
    slow = StepClock(alpha=0.25, fps=2)  # several steps can fall on one frame
    assert [slow.steps_at(f) for f in (1, 2)] == [3, 2]  # frame 0 folds into frame 1


def test_skipping_frames_between_steps_gives_the_same_step_features(tiny_video, tiny, one_thread):
    """The demo computes features only on step frames (and flow only where the next stack
    reads it): the step features must equal those of an extractor computing every frame."""
    from feature_extraction.config import load_config
    from feature_extraction.streaming import StreamingExtractor
    from feature_extraction.video import decode_video
    from rulstm_apps.demo import FramePusher

    config = load_config(tiny.config, tiny.overrides)
    everything, skipping = StreamingExtractor(config), StreamingExtractor(config)
    clock = StepClock(alpha=0.25, fps=30)
    pusher = FramePusher(skipping, clock)
    assert pusher.can_skip and pusher.can_skip_flow
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
    from rulstm_apps.demo import DemoError, load_model

    path = make_checkpoint("fusion")
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"].pop(next(iter(checkpoint["state_dict"])))
    torch.save(checkpoint, path)
    with pytest.raises(DemoError, match=f"{path} does not fit RULSTMFusion: missing"):
        load_model(path, device=torch.device("cpu"))
