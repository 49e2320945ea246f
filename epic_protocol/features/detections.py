"""The ``detections`` subgroup of ``obj.h5`` video groups: raw object detections.

``obj.h5`` video groups may hold the raw detections (extraction with ``keep_detections``) as
extra datasets in a ``detections`` subgroup::

    <video_id>/detections/
        frame    int64   (M,)    1-based frame (at the file's fps) of each detection
        boxes    float32 (M, 4)  x1, y1, x2, y2 in pixels of the decoded frame
        labels   int64   (M,)    0-based class indices into the root provenance's class_names
        scores   float32 (M,)

Rows are sorted by frame; a frame's detections are ``np.searchsorted`` away. They are written
per video to a file of their own (:class:`DetectionsWriter`: the same datasets at its root,
attributes ``complete`` and ``class_names``), and copied into the video's group when feature
files are merged (:func:`copy_detections`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import h5py
import numpy as np

from epic_protocol.features.checks import open_for_reading, open_for_writing
from epic_protocol.features.failures import FeatureWriteError, reporting_write_failures
from epic_protocol.features.layout import COMPLETE

DETECTIONS = "detections"
#: Dataset name -> (dtype, shape of one row).
DETECTION_FIELDS: dict[str, tuple[type, tuple[int, ...]]] = {
    "frame": (np.int64, ()),
    "boxes": (np.float32, (4,)),
    "labels": (np.int64, ()),
    "scores": (np.float32, ()),
}


class DetectionsWriter:
    """Appends one video's raw detections to a file of their own (see the module docstring),
    marked complete by :meth:`finish`.

    A write the OS refuses raises :class:`~epic_protocol.features.FeatureWriteError` naming
    the file and abandons it (as :class:`~epic_protocol.features.FeatureFileWriter` does);
    every later call raises it again, and :meth:`close` then returns quietly.

    Raises:
        FeatureFileAccessError: the file cannot be opened for writing.
    """

    def __init__(self, path: Path, *, class_names: Iterable[str]) -> None:
        path = Path(path)
        path.unlink(missing_ok=True)
        self.path = path
        self._failure: FeatureWriteError | None = None
        self._file = open_for_writing(path, "w")
        self._datasets: dict[str, h5py.Dataset] = {}
        with self._writing():
            self._file.attrs[COMPLETE] = False
            self._file.attrs["class_names"] = json.dumps(list(class_names))
            for name, (dtype, shape) in DETECTION_FIELDS.items():
                self._datasets[name] = self._file.create_dataset(
                    name,
                    shape=(0, *shape),
                    maxshape=(None, *shape),
                    dtype=dtype,
                    chunks=(1024, *shape),
                )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        if self._failure is not None:
            raise self._failure
        try:
            with reporting_write_failures(self.path, self._file, self._datasets):
                yield
        except FeatureWriteError as failure:
            self._failure = failure
            raise

    def append(self, frame: int, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> None:
        """Append the ``M`` detections of one frame: ``boxes`` (M, 4), ``labels`` and
        ``scores`` (M,); frames must come in increasing order."""
        count = len(scores)
        if count == 0:
            return
        values = {
            "frame": np.full(count, frame, np.int64),
            "boxes": np.asarray(boxes, np.float32).reshape(count, 4),  # (M, 4)
            "labels": np.asarray(labels, np.int64),
            "scores": np.asarray(scores, np.float32),
        }
        with self._writing():
            for name, value in values.items():
                dataset = self._datasets[name]
                start = dataset.shape[0]
                dataset.resize(start + count, axis=0)
                dataset[start:] = value

    def finish(self) -> None:
        """Mark the file complete and close it."""
        with self._writing():
            self._file.attrs[COMPLETE] = True
        self.close()

    def close(self) -> None:
        if self._failure is not None or not self._file.id.valid:
            return
        with self._writing():
            self._file.flush()  # a dataset closed by its destructor would hide a failed write
            self._datasets.clear()
            self._file.close()


def copy_detections(source: Path, video_group: h5py.Group) -> bool:
    """Copy the detections of a complete :class:`DetectionsWriter` file into a ``detections``
    subgroup of ``video_group`` (an ``obj.h5`` video group open for writing). Returns whether
    there was anything to copy (a missing or incomplete file is skipped).

    Raises:
        FeatureFileError: ``source`` exists but is not a readable HDF5 file.
    """
    if not Path(source).is_file():
        return False
    with open_for_reading(source) as handle:
        if not bool(handle.attrs.get(COMPLETE, False)):
            return False
        group = video_group.create_group(DETECTIONS)
        for name in DETECTION_FIELDS:
            handle.copy(handle[name], group, name=name)
    return True
