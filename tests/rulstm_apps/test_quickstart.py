"""The quickstart end to end on the tiny preset: generation, the real extraction CLI,
training of every stage and of the baselines, evaluation, the final table, the printed
commands and the demo."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from epic_protocol.precision import EmulatedBf16Warning, auto_precision
from rulstm_apps.quickstart import (
    OUTPUTS,
    PRESETS,
    QuickstartError,
    bound_ratio_interval,
    build_parser,
    claim_output_folder,
    main,
    training_precision,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_tiny_quickstart_end_to_end(tmp_path, capsys):
    out = tmp_path / "quickstart"
    assert main(["--out", str(out), "--preset", "tiny", "--baselines"]) == 0
    printed = capsys.readouterr().out
    for name in (
        "data/bayes.json",
        "features/rgb.h5",
        "features/flow.h5",
        "features/obj.h5",
        "metrics.txt",
        "metrics.json",
        "accuracy.png",
        "demo.mp4",
        "timings.json",
        "commands.sh",
    ):
        assert (out / name).is_file(), name
        # The closing line lists every file the run wrote (the docs' list of outputs).
        listed = name.split("/")[0] + "/" if "/" in name else name
        assert listed in printed[printed.index("outputs in ") :], name
    for stage in (
        "rgb_sc",
        "rgb_anticipation",
        "flow_sc",
        "flow_anticipation",
        "obj_sc",
        "obj_anticipation",
        "fusion",
    ):
        assert (out / "runs" / stage / "checkpoints" / "best.ckpt").is_file(), stage
    summary = json.loads((out / "metrics.json").read_text())
    baselines = {"lstm_rgb", "tcn_rgb", "rugru_rgb", "transformer_rgb", "probe_rgb"}
    assert set(summary["models"]) == {"rgb", "flow", "obj", "fusion"} | baselines
    table = printed[printed.index("=== results ===") :]
    assert all(f"\n{name} " in table for name in baselines)
    # The exact commands, printed as they run and saved, with no size options.
    commands = (out / "commands.sh").read_text()
    for program in (
        "rulstm-extract --videos",
        "rulstm fit -c",
        "rulstm test -c",
        "rulstm-demo --video",
    ):
        assert f"$ {program}" in printed and f"\n{program}" in commands, program
    assert "num_classes" not in commands and "feat_dim" not in commands
    # The default precision is auto: what the precision rule says for this CPU.
    resolved = auto_precision("cpu")
    assert commands.count(f"--trainer.precision {resolved}") == commands.count("rulstm fit ")
    assert len(summary["bayes_expected"]["top5"]) == 8
    for values in summary["models"].values():
        assert all(0.0 <= v <= 100.0 for v in values["top5"])
    assert 0.0 < summary["bayes_expected"]["top5"][4] <= 100.0
    assert "Bayes bound (expected)" in printed and "of the Bayes bound" in printed
    low, high = summary["fusion_top5_at_1s_over_bound_95ci"]
    assert low <= summary["fusion_top5_at_1s_over_bound"] <= high
    assert "95 % interval of that ratio" in printed
    # How this run compares with the reference numbers over seeds (per preset and precision).
    assert "seeds (" in printed or "no reference numbers for --preset tiny" in printed
    with av.open(str(out / "demo.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) > 0
    for stage in ("rgb_sc", "fusion"):  # one best and one last checkpoint, no best-v1.ckpt
        names = sorted(p.name for p in (out / "runs" / stage / "checkpoints").iterdir())
        assert names == ["best.ckpt", "last.ckpt"], names
    # A rerun into the same folder is refused in one line, before touching anything.
    best = out / "runs" / "fusion" / "checkpoints" / "best.ckpt"
    stamp = best.stat().st_mtime_ns
    assert main(["--out", str(out), "--preset", "tiny"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"rulstm-quickstart: error: {out} already holds")
    assert "--overwrite" in err[0] and best.stat().st_mtime_ns == stamp


def test_presets_and_bad_arguments(tmp_path, capsys):
    assert {"tiny", "default", "large", "baselines"} <= set(PRESETS)
    assert PRESETS["baselines"].baselines and not PRESETS["default"].baselines
    assert main(["--preset", "huge", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rulstm-quickstart: error: argument --preset")
    assert "invalid choice: 'huge'" in err[0]
    assert build_parser().parse_args(["--precision", "bf16-mixed"]).precision == "bf16-mixed"
    assert build_parser().parse_args([]).precision == "auto"
    assert main(["--precision", "fp8", "--out", str(tmp_path)]) == 2
    assert "argument --precision" in capsys.readouterr().err


def test_help_has_no_markup_and_documents_every_option(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text and ":class:" not in text
    parser = build_parser()
    for action in parser._actions:
        assert action.help, f"{action.option_strings} has no help"
        for option in action.option_strings:
            assert option in text
    # Measured times have one source, docs/quickstart.md (with their spread and CPU), not the
    # help, which names that page.
    assert "docs/quickstart.md" in " ".join(text.split())
    assert (ROOT / "docs" / "quickstart.md").is_file()
    assert "timed" not in text and "260 s" not in text


def test_overwrite_replaces_only_the_quickstart_outputs(tmp_path):
    out = tmp_path / "qs"
    stale = out / "runs" / "fusion" / "checkpoints" / "best.ckpt"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"earlier run")
    (out / "metrics.json").write_text("{}")
    (out / "notes.txt").write_text("mine")  # not an output of the quickstart: kept
    with pytest.raises(
        QuickstartError, match=r"already holds a quickstart run \(runs, metrics.json\)"
    ):
        claim_output_folder(out, overwrite=False)
    assert stale.is_file()
    claim_output_folder(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert not any((out / name).exists() for name in OUTPUTS)
    claim_output_folder(tmp_path / "new", overwrite=False)  # nothing there: fine


def test_bound_ratio_interval():
    # 89 % top-5 over 512 segments against an exact 95.6 % bound.
    low, high = bound_ratio_interval(89.0, 512, 95.6)
    assert low < 89.0 / 95.6 < high
    assert 0.025 < (high - low) / 2 < 0.03  # about +-2.7 points of the ratio
    narrow, wide = bound_ratio_interval(89.0, 512, 95.6), bound_ratio_interval(89.0, 128, 95.6)
    assert wide[1] - wide[0] > 1.9 * (narrow[1] - narrow[0])
    assert bound_ratio_interval(100.0, 50, 100.0)[1] == pytest.approx(1.0)  # Wilson: inside [0, 1]
    with pytest.raises(ValueError):
        bound_ratio_interval(50.0, 0, 90.0)


def test_default_preset_has_at_least_500_validation_segments():
    from synthetic_kitchen.generate import PRESETS as SIZES

    size = SIZES[PRESETS["default"].dataset]
    validation_videos = size.participants * size.validation_videos_per_participant
    assert validation_videos * size.actions_per_video >= 500


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_follows_native_bf16(native, expected, force_bf16_native, capsys):
    force_bf16_native(native)
    assert training_precision("auto") == expected
    assert f"precision auto -> {expected}" in capsys.readouterr().out
    assert training_precision("32-true") == "32-true"


def test_explicit_bf16_on_an_emulating_cpu_warns(force_bf16_native):
    force_bf16_native(False)
    with pytest.warns(EmulatedBf16Warning, match="--precision bf16-mixed"):
        assert training_precision("bf16-mixed") == "bf16-mixed"
