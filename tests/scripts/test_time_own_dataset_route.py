"""``scripts/time_own_dataset_route.py`` finds the docs' route and prepares what it expects.

The timed run itself is a benchmark (minutes); the route's commands are run at tiny sizes by
``tests/test_own_dataset_route.py``. Here: the block the script runs is the docs' route, with the
``WEIGHTS=""`` line it replaces, and the generated own-dataset folder holds what steps 1-3 say."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "time_own_dataset_route.py"


def _script():
    spec = importlib.util.spec_from_file_location("time_own_dataset_route", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_timed_block_is_the_docs_route_with_its_weights_line():
    doc, block = _script().route_block()
    assert doc.suffix == ".md"
    assert 'WEIGHTS=""' in block
    programs = [line.split()[0] for line in block.splitlines() if line.startswith("rulstm")]
    assert programs[0] == "rulstm-extract" and programs[-1] == "rulstm-demo"


def test_the_generated_folder_has_what_the_route_reads(tmp_path, monkeypatch):
    script = _script()
    import synthetic_kitchen.generate as generate

    real = generate.generate_dataset

    def small(out_dir, *, preset, **kwargs):  # the script's clips, rendered at 64 x 48
        tiny = generate.DatasetSize(**{**preset.__dict__, "width": 64, "height": 48})
        return real(out_dir, preset=tiny, **kwargs)

    monkeypatch.setattr(generate, "generate_dataset", small)
    script.make_own_dataset(tmp_path, seed=0)
    videos = sorted(path.name for path in (tmp_path / "my" / "videos").iterdir())
    assert len(videos) == 3 and "clip.mp4" in videos
    validation = (tmp_path / "my" / "validation.csv").read_text().splitlines()
    assert validation and all(line.split(",")[1] == "clip" for line in validation)
    test = yaml.safe_load((tmp_path / "configs" / "mydata" / "test.yaml").read_text())
    evaluator = test["trainer"]["callbacks"][0]["init_args"]
    assert evaluator["protocol"] == "custom" and evaluator["out_dir"] == "evaluation/mydata"
    base = yaml.safe_load((tmp_path / "configs" / "mydata" / "base.yaml").read_text())
    assert base["protocol"] == "custom" and base["data"]["actions"] == "my/actions.csv"
    split = yaml.safe_load((tmp_path / "configs" / "mydata" / "split1.yaml").read_text())
    assert split["data"]["features"] == {"rgb": "data/mydata/rgb.h5", "flow": "data/mydata/flow.h5"}
