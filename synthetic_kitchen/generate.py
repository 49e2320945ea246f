"""Write a synthetic EPIC-KITCHENS-like dataset: videos, annotations in both formats, the
colour palette, the recipe and its Bayes bound.

Layout of ``out_dir`` (mirrors ``rulstm/resources/ek100``)::

    videos/P01_01.mp4 ...            H.264 yuv420p, 30 fps
    training.csv, validation.csv     RU-LSTM split format (no header, 1-based 30 fps frames)
    training_videos.csv, validation_videos.csv
    actions.csv                      id,verb,noun,action
    epic/EPIC_100_train.csv, epic/EPIC_100_validation.csv
    epic/EPIC_100_video_info.csv, epic/EPIC_100_{verb,noun}_classes.csv
    objects.yaml                     the palette for the colour-blob object detector
    recipe.json                      the Markov chain and the timing model
    bayes.json                       the Bayes bound on the validation split
    ego4d/fho_lta_{train,val}.json, ego4d/fho_lta_taxonomy.json
                                     the same actions in Ego4D's LTA format (each video is
                                     one clip, clip_uid = video_uid = the video id)

Everything is a function of ``seed`` (and the size): the same seed gives the same bytes.
The split is by video: the last ``validation_videos_per_participant`` videos of every
participant are validation.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from epic_protocol.annotations import (
    ActionVocabulary,
    Segment,
    write_actions_csv,
    write_class_names,
    write_epic_100_csv,
    write_id_list,
    write_rulstm_split,
    write_video_info,
)
from epic_protocol.errors import ArgumentParser, cli_main
from synthetic_kitchen.lta import write_lta_files
from synthetic_kitchen.recipe import BayesBound, RecipeModel, bayes_bound, make_recipe
from synthetic_kitchen.render import (
    RenderSettings,
    ScheduledAction,
    palette_rgb,
    render_video,
)

FPS = 30
Preset = Literal["tiny", "default", "large", "lta"]


@dataclass(frozen=True)
class DatasetSize:
    """How much to generate. Videos are ``P{participant:02d}_{index:02d}``."""

    participants: int
    videos_per_participant: int
    validation_videos_per_participant: int
    actions_per_video: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.participants < 1 or self.actions_per_video < 2:
            raise ValueError("need at least 1 participant and 2 actions per video")
        if not 1 <= self.validation_videos_per_participant < self.videos_per_participant:
            raise ValueError(
                "validation_videos_per_participant must be >= 1 and leave training videos"
            )


PRESETS: dict[str, DatasetSize] = {
    # CI tests: 4 videos of ~20 s at 96 x 72.
    "tiny": DatasetSize(
        participants=2,
        videos_per_participant=2,
        validation_videos_per_participant=1,
        actions_per_video=6,
        width=96,
        height=72,
    ),
    # The quickstart: 64 videos of ~55 s (512 training, 512 validation segments: enough for a
    # 95 % interval of about +-2.7 points on the fusion / Bayes-bound ratio).
    "default": DatasetSize(
        participants=4,
        videos_per_participant=16,
        validation_videos_per_participant=8,
        actions_per_video=16,
        width=128,
        height=96,
    ),
    "large": DatasetSize(
        participants=8,
        videos_per_participant=12,
        validation_videos_per_participant=3,
        actions_per_video=24,
        width=160,
        height=120,
    ),
    # Long-term anticipation (rulstm-quickstart --task lta): an LTA window needs N + Z = 22
    # actions in one clip, so 12 videos of 60 actions (~3.5 min each): 39 windows per video.
    "lta": DatasetSize(
        participants=3,
        videos_per_participant=4,
        validation_videos_per_participant=1,
        actions_per_video=60,
        width=96,
        height=72,
    ),
}


@dataclass(frozen=True)
class TimingModel:
    """Frame counts at 30 fps, each drawn uniformly from the inclusive range, independently
    of the actions (so timing says nothing about which action comes next).

    The shortest action + gap (84 frames = 2.8 s) exceeds the longest anticipation time
    (2 s), so the current action has started at every anticipation time; the lead-in (>= 36
    frames) keeps every first action's anticipation frames valid, so none is dropped.
    """

    lead_in: tuple[int, int] = (36, 54)
    duration: tuple[int, int] = (78, 102)
    gap: tuple[int, int] = (6, 15)
    tail: int = 24

    def __post_init__(self) -> None:
        for name in ("lead_in", "duration", "gap"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must be a range (low, high) with 0 <= low <= high")
        if self.duration[0] + self.gap[0] <= 2 * FPS:
            raise ValueError(
                "the shortest action + gap must exceed 2 s (60 frames), the longest "
                "anticipation time, or the Bayes bound is not exact"
            )
        if self.lead_in[0] < 8:
            raise ValueError("lead_in must be >= 8 frames, or first actions would be dropped")

    def schedule(self, rng: np.random.Generator, count: int) -> tuple[list[tuple[int, int]], int]:
        """``count`` (start, end) 1-based inclusive frame spans and the video's frame count."""
        spans = []
        start = int(rng.integers(self.lead_in[0], self.lead_in[1] + 1)) + 1
        for _ in range(count):
            end = start + int(rng.integers(self.duration[0], self.duration[1] + 1)) - 1
            spans.append((start, end))
            start = end + 1 + int(rng.integers(self.gap[0], self.gap[1] + 1))
        return spans, spans[-1][1] + self.tail


@dataclass(frozen=True)
class DatasetPaths:
    """Every file the generator wrote."""

    root: Path
    videos_dir: Path
    training_csv: Path
    validation_csv: Path
    training_videos_csv: Path
    validation_videos_csv: Path
    actions_csv: Path
    epic_train_csv: Path
    epic_validation_csv: Path
    video_info_csv: Path
    verb_classes_csv: Path
    noun_classes_csv: Path
    palette_yaml: Path
    recipe_json: Path
    bayes_json: Path
    lta_train_json: Path
    lta_val_json: Path
    lta_taxonomy_json: Path

    @classmethod
    def under(cls, root: str | Path) -> DatasetPaths:
        root = Path(root)
        epic = root / "epic"
        return cls(
            root=root,
            videos_dir=root / "videos",
            training_csv=root / "training.csv",
            validation_csv=root / "validation.csv",
            training_videos_csv=root / "training_videos.csv",
            validation_videos_csv=root / "validation_videos.csv",
            actions_csv=root / "actions.csv",
            epic_train_csv=epic / "EPIC_100_train.csv",
            epic_validation_csv=epic / "EPIC_100_validation.csv",
            video_info_csv=epic / "EPIC_100_video_info.csv",
            verb_classes_csv=epic / "EPIC_100_verb_classes.csv",
            noun_classes_csv=epic / "EPIC_100_noun_classes.csv",
            palette_yaml=root / "objects.yaml",
            recipe_json=root / "recipe.json",
            bayes_json=root / "bayes.json",
            lta_train_json=root / "ego4d" / "fho_lta_train.json",
            lta_val_json=root / "ego4d" / "fho_lta_val.json",
            lta_taxonomy_json=root / "ego4d" / "fho_lta_taxonomy.json",
        )

    def video(self, video_id: str) -> Path:
        return self.videos_dir / f"{video_id}.mp4"


@dataclass(frozen=True)
class _VideoPlan:
    """One video to render (picklable, for worker processes)."""

    video_id: str
    path: Path
    actions: tuple[ScheduledAction, ...]
    num_frames: int
    seed: tuple[int, ...]  # the SeedSequence entropy + spawn key of its render randomness


def _render(
    plan: _VideoPlan,
    verbs: Sequence[str],
    noun_colours: Sequence[tuple[int, int, int]],
    settings: RenderSettings,
) -> int:
    entropy, *spawn_key = plan.seed
    rng = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=tuple(spawn_key)))
    return render_video(
        plan.path,
        plan.actions,
        plan.num_frames,
        verbs=verbs,
        noun_colours=noun_colours,
        settings=settings,
        rng=rng,
    )


def _write_palette(path: Path, recipe: RecipeModel) -> None:
    """objects.yaml: a list of {id, name, rgb} (written by hand: plain, stable, no YAML
    dependency for the generator)."""
    lines = [
        "# Synthetic-kitchen object palette: one saturated colour per noun class.",
        "# Object pixels have HSV saturation 1 and value 0.9 before video compression;",
        "# every other rendered pixel (counter, wall, hand, props) has saturation <= 0.3.",
    ]
    for noun, (name, rgb) in enumerate(zip(recipe.nouns, palette_rgb(len(recipe.nouns)))):
        lines += [f"- id: {noun}", f"  name: {name}", f"  rgb: [{rgb[0]}, {rgb[1]}, {rgb[2]}]"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_annotations(
    paths: DatasetPaths,
    recipe: RecipeModel,
    plans: Sequence[_VideoPlan],
    labels: dict[str, np.ndarray],
    validation: set[str],
    size: DatasetSize,
) -> dict[str, list[Segment]]:
    """Both annotation formats, class and action lists; returns the segments per split."""
    segments: dict[str, list[Segment]] = {"training": [], "validation": []}
    for plan in plans:
        split = "validation" if plan.video_id in validation else "training"
        for index, (scheduled, action) in enumerate(zip(plan.actions, labels[plan.video_id])):
            segments[split].append(
                Segment(
                    f"{plan.video_id}_{index}",
                    plan.video_id,
                    scheduled.start_frame,
                    scheduled.end_frame,
                    scheduled.verb,
                    scheduled.noun,
                    int(action),
                )
            )
    names = {"verb_names": recipe.verbs, "noun_names": recipe.nouns, "fps": FPS}
    write_rulstm_split(paths.training_csv, segments["training"])
    write_rulstm_split(paths.validation_csv, segments["validation"])
    write_epic_100_csv(paths.epic_train_csv, segments["training"], **names)
    write_epic_100_csv(paths.epic_validation_csv, segments["validation"], **names)
    write_video_info(
        paths.video_info_csv,
        {p.video_id: p.num_frames for p in plans},
        fps=FPS,
        resolution=(size.width, size.height),
    )
    write_class_names(paths.verb_classes_csv, recipe.verbs, category="synthetic")
    write_class_names(paths.noun_classes_csv, recipe.nouns, category="synthetic")
    write_actions_csv(
        paths.actions_csv,
        ActionVocabulary(
            verbs=np.array([v for v, _ in recipe.actions], dtype=np.int64),
            nouns=np.array([n for _, n in recipe.actions], dtype=np.int64),
            names=tuple(recipe.action_name(a) for a in range(len(recipe.actions))),
            num_verbs=len(recipe.verbs),
            num_nouns=len(recipe.nouns),
        ),
    )
    write_id_list(
        paths.training_videos_csv, [p.video_id for p in plans if p.video_id not in validation]
    )
    write_id_list(
        paths.validation_videos_csv, [p.video_id for p in plans if p.video_id in validation]
    )
    return segments


def _remove_stale_videos(paths: DatasetPaths, keep: set[str]) -> None:
    """Delete interrupted renders, and the videos of an earlier, larger generation into the
    same folder (only when the folder holds a generator's recipe.json, and only
    ``P??_??.mp4`` files), so that the folder never holds videos without annotations."""
    for partial in paths.videos_dir.glob("*.mp4.partial"):  # an interrupted render
        partial.unlink()
    if not paths.recipe_json.is_file():
        return
    for video in paths.videos_dir.glob("P[0-9][0-9]_[0-9][0-9].mp4"):
        if video.stem not in keep:
            video.unlink()


def resolve_size(preset: Preset | DatasetSize) -> DatasetSize:
    if isinstance(preset, DatasetSize):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}") from None


def generate_dataset(
    out_dir: str | Path,
    *,
    preset: Preset | DatasetSize = "default",
    seed: int = 0,
    workers: int | None = None,
    timing: TimingModel | None = None,
    progress: bool = True,
) -> DatasetPaths:
    """Generate the dataset into ``out_dir`` (created; existing files are overwritten, and
    videos left by an earlier generation that this one does not make are removed).

    ``preset`` is a name from :data:`PRESETS` or a :class:`DatasetSize`. The recipe depends
    only on ``seed`` (all presets of a seed share it); each video's content on ``seed`` and
    its index, so the output does not depend on ``workers`` (default: up to 4 processes).
    """
    size = resolve_size(preset)
    timing = timing or TimingModel()
    paths = DatasetPaths.under(out_dir)
    paths.videos_dir.mkdir(parents=True, exist_ok=True)
    root_seed = np.random.SeedSequence(seed)
    recipe_seed, *video_seeds = root_seed.spawn(1 + size.participants * size.videos_per_participant)
    recipe = make_recipe(np.random.default_rng(recipe_seed))

    plans: list[_VideoPlan] = []
    labels: dict[str, np.ndarray] = {}
    validation: set[str] = set()
    first_validation = size.videos_per_participant - size.validation_videos_per_participant
    for p in range(size.participants):
        for v in range(size.videos_per_participant):
            video_id = f"P{p + 1:02d}_{v + 1:02d}"
            sequence_seed, render_seed = video_seeds[p * size.videos_per_participant + v].spawn(2)
            rng = np.random.default_rng(sequence_seed)
            actions = recipe.sample_sequence(rng, size.actions_per_video)
            spans, num_frames = timing.schedule(rng, size.actions_per_video)
            scheduled = tuple(
                ScheduledAction(
                    verb=recipe.actions[a][0], noun=recipe.actions[a][1], start_frame=s, end_frame=e
                )
                for a, (s, e) in zip(actions, spans)
            )
            plans.append(
                _VideoPlan(
                    video_id=video_id,
                    path=paths.video(video_id),
                    actions=scheduled,
                    num_frames=num_frames,
                    seed=(int(render_seed.entropy), *render_seed.spawn_key),
                )
            )
            labels[video_id] = actions
            if v >= first_validation:
                validation.add(video_id)

    settings = RenderSettings(width=size.width, height=size.height, fps=FPS)
    colours = palette_rgb(len(recipe.nouns))
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    _remove_stale_videos(paths, {plan.video_id for plan in plans})
    bar = tqdm(total=len(plans), desc="rendering videos", unit="video", disable=not progress)
    if workers <= 1:
        for plan in plans:
            _render(plan, recipe.verbs, colours, settings)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_render, p, recipe.verbs, colours, settings) for p in plans]
            for future in futures:
                future.result()
                bar.update()
    bar.close()

    segments = _write_annotations(paths, recipe, plans, labels, validation, size)
    write_lta_files(paths, recipe, segments)
    _write_palette(paths.palette_yaml, recipe)
    recipe_data = recipe.to_dict()
    recipe_data["timing"] = {**asdict(timing), "fps": FPS}
    recipe_data["seed"] = seed
    recipe_data["size"] = asdict(size)
    paths.recipe_json.write_text(json.dumps(recipe_data, indent=1) + "\n", encoding="utf-8")
    bound = bayes_bound(recipe, segments["validation"], fps=FPS)
    bound_data = {
        "split": "validation",
        "note": (
            "Bayes-optimal accuracy of anticipating each validation action from everything "
            "observable before it; compare models with action_expected (see "
            "synthetic_kitchen.recipe)."
        ),
        **bound.to_dict(),
    }
    paths.bayes_json.write_text(json.dumps(bound_data, indent=1) + "\n", encoding="utf-8")
    return paths


def summarise(bound: BayesBound, *, time_s: float = 1.0) -> str:
    """One line per score at ``time_s``, for logs."""
    entry = bound.at(time_s)
    chance = bound.chance
    return (
        f"Bayes bound at {time_s} s on {bound.num_samples} samples: action top-1 "
        f"{entry.action_expected.top1:.3f} / top-5 {entry.action_expected.top5:.3f} expected "
        f"({entry.action_realised.top1:.3f} / {entry.action_realised.top5:.3f} realised); "
        f"chance top-1 {chance.prior_expected.top1:.3f} / top-5 {chance.prior_expected.top5:.3f} "
        f"(prior), {chance.uniform.top1:.3f} / {chance.uniform.top5:.3f} (uniform)"
    )


@cli_main("python -m synthetic_kitchen")
def main(argv: Sequence[str] | None = None) -> None:
    """``python -m synthetic_kitchen --out DIR [--preset tiny|default|large] [--seed N]``;
    errors are one line with the exit status of their kind (:mod:`epic_protocol.errors`)."""
    parser = ArgumentParser(
        prog="python -m synthetic_kitchen",
        description="Generate the synthetic kitchen dataset (videos, annotations, Bayes bound).",
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--preset", default="default", choices=sorted(PRESETS))
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument(
        "--workers", default=None, type=int, help="render processes (default: up to 4)"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    paths = generate_dataset(args.out, preset=args.preset, seed=args.seed, workers=args.workers)
    elapsed = time.perf_counter() - started
    print(f"wrote {paths.root} in {elapsed:.1f} s")
    print(summarise(BayesBound.load(paths.bayes_json)))
