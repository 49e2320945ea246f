"""rulstm-web's request as a plain function: a tiny synthetic clip in, the MP4, the JSON Lines
predictions and the chart rows out; bad inputs refused with the page's messages and no files
left behind."""

from __future__ import annotations

import json

import av
import pytest

from rulstm_apps.web_request import WebInputError, WebLimits, WebModel, handle_request


def test_handler_gives_the_video_the_predictions_and_the_chart_rows(
    web_model, tiny_video, tmp_path, tiny, one_thread
):
    work_root = tmp_path / "work"
    result = handle_request(tiny_video, model=web_model, horizon=0.5, top_k=3, work_root=work_root)
    assert result.workdir.parent == work_root and result.steps == 8
    with av.open(str(result.video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == tiny.frames
    lines = [json.loads(line) for line in result.predictions.read_text().splitlines()]
    assert len(lines) == 8 and lines[0]["fusion"] == "matt"
    assert all(len(a["top_k"]) == 3 for a in lines[0]["anticipations"])
    # The chart: 3 actions x 8 steps at the chosen 0.5 s, named from actions.csv.
    assert len(result.probabilities) == 3 * 8
    assert {row["time_s"] for row in result.probabilities} == {f / 30 for f in
                                                               (7, 15, 22, 30, 37, 45, 52, 60)}  # fmt: skip
    assert all(row["action"].split()[0] in {"take", "put", "open"} for row in result.probabilities)
    step_0_5 = next(a for a in lines[0]["anticipations"] if a["time_s"] == 0.5)
    first_action = step_0_5["top_k"][0]
    charted = {
        row["action"]: row["probability"]
        for row in result.probabilities
        if row["time_s"] == pytest.approx(7 / 30)
    }
    if first_action["name"] in charted:  # the chart's actions are the clip's best on average
        assert charted[first_action["name"]] == pytest.approx(first_action["probability"])
    # MATT weights of the three modalities at every step, summing to one.
    assert len(result.weights) == 3 * 8
    for time_s in {row["time_s"] for row in result.weights}:
        total = sum(row["weight"] for row in result.weights if row["time_s"] == time_s)
        assert total == pytest.approx(1.0, abs=1e-5)
    result.cleanup()
    assert list(work_root.iterdir()) == []


def test_bad_inputs_give_messages_and_leave_no_files(web_model, tiny_video, tmp_path):
    work_root = tmp_path / "work"

    def refused(video, match, **kwargs):
        with pytest.raises(WebInputError, match=match):
            handle_request(video, model=web_model, work_root=work_root, **kwargs)

    refused(None, "Upload a video")
    text = tmp_path / "notes.txt"
    text.write_text("not a video\n" * 20)
    refused(text, "notes.txt could not be read as a video")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(tiny_video.read_bytes()[:300])  # the header and nothing decodable
    refused(corrupt, "corrupt.mp4")
    refused(tiny_video, r"lasts 2.0 s; this demo takes clips up to 1 s",
            limits=WebLimits(max_seconds=1.0))  # fmt: skip
    refused(tiny_video, r"this demo accepts files up to 0.001 MB",
            limits=WebLimits(max_upload_mb=0.001))  # fmt: skip
    refused(tiny_video, "anticipation time must be one of", horizon=0.3)
    refused(tiny_video, "Top-k must be between", top_k=0)
    wrong = WebModel(checkpoints=(tmp_path / "absent.ckpt",), extract_config=web_model.extract_config,
                     extract_overrides=web_model.extract_overrides)  # fmt: skip
    with pytest.raises(WebInputError, match="checkpoint not found"):
        handle_request(tiny_video, model=wrong, work_root=work_root)
    assert not work_root.exists() or list(work_root.iterdir()) == []


def _trained_on(checkpoint, record):
    import torch

    from epic_protocol.backbones import CHECKPOINT_KEY

    loaded = torch.load(checkpoint, weights_only=True)
    loaded[CHECKPOINT_KEY] = {"rgb": record, "flow": None, "obj": None}
    torch.save(loaded, checkpoint)
    return checkpoint


DINO = {"backbone": "timm:vit_small_patch14_dinov2", "weights": "/w", "revision": None,
        "clip_length": 1, "clip_stride": 1, "dim": 512}  # fmt: skip


def test_a_checkpoint_of_another_backbone_is_refused_in_the_page(
    web_model, tiny_video, tmp_path, recwarn
):
    """The request's full check (weights too): the page's message names both backbones."""
    import dataclasses

    work_root = tmp_path / "work"
    resnet = {**DINO, "backbone": "resnet18", "weights": "/other-weights.pth"}
    other = _trained_on(web_model.checkpoints[0], resnet)  # same name, other weights
    with pytest.raises(WebInputError) as caught:
        handle_request(tiny_video, model=web_model, work_root=work_root)
    message = str(caught.value)
    assert "\n" not in message and str(other) in message
    assert "/other-weights.pth" in message and "none (random, seeded)" in message
    assert not work_root.exists() or list(work_root.iterdir()) == []
    # A checkpoint recording no backbone: served, with a warning naming it.
    unrecorded = dataclasses.replace(web_model, checkpoints=(_trained_on(other, None),))
    handle_request(tiny_video, model=unrecorded, work_root=work_root).cleanup()
    assert any("records no rgb backbone" in str(w.message) for w in recwarn)


def test_the_app_refuses_to_serve_another_backbones_checkpoint(make_checkpoint, tmp_path):
    """Before serving (no request needed): the checkpoint's backbone against the one the
    extraction config computes, by name."""
    pytest.importorskip("gradio", reason="the [web] extra is not installed")
    from rulstm_apps.web import WebSetupError, prepare

    checkpoint = _trained_on(make_checkpoint("fusion"), DINO)
    with pytest.raises(WebSetupError) as caught:  # prepare builds the app, main would serve it
        prepare(["--checkpoint", str(checkpoint), "--port", "7998"], work_root=tmp_path / "w")
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{checkpoint} was trained on rgb")
    assert "timm:vit_small_patch14_dinov2" in message
    assert "resnet50" in message  # what the default extraction config computes
    assert not (tmp_path / "w").exists()
