"""Detection files are pickles: they are read with a numpy-only unpickler, so the authors'
object arrays of float arrays load with no option and a file whose pickle names anything else
is refused naming the file, without running it (``rulstm-import detections``, the demo's
``--detections``)."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from rulstm.compat.cli import main
from rulstm.compat.detections import DetectionImportError, load_detection_file
from rulstm_apps.demo_inputs import DemoError, DetectionFeatures


class _Payload:
    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _payload_npy(path, marker):
    """A detection-like object array whose second frame is a ``__reduce__`` payload."""
    entries = np.empty(2, dtype=object)
    entries[0] = np.zeros((1, 6))
    entries[1] = _Payload(marker)
    np.save(path, entries, allow_pickle=True)
    return path


def _authors_npy(path, *, protocol: int | None = None):
    """The authors' layout: a 1-D object array of float64 [N, 6] arrays (and an empty (0,)
    frame); protocol 2 as their Python 2 files."""
    entries = np.empty(3, dtype=object)
    entries[0] = np.array([[3, 1, 2, 3, 4, 0.5], [1, 5, 6, 7, 8, 0.25]])
    entries[1] = np.zeros((0,))
    entries[2] = np.array([[2, 0, 0, 9, 9, 0.75]])
    if protocol is None:
        np.save(path, entries, allow_pickle=True)
        return path
    with open(path, "wb") as handle:
        header = np.lib.format.header_data_from_array_1_0(entries)
        np.lib.format.write_array_header_1_0(handle, header)
        pickle.dump(entries, handle, protocol=protocol)
    return path


def test_a_reduce_payload_is_refused_without_running(tmp_path, capsys):
    marker = tmp_path / "ran.marker"
    evil = _payload_npy(tmp_path / "P01_01.npy", marker)
    with pytest.raises(DetectionImportError) as caught:
        load_detection_file(evil)
    assert str(caught.value).startswith(f"{evil}: refused: it names posix.system")
    out = tmp_path / "obj.h5"
    assert main(["detections", "--npy", str(evil), "--out", str(out), "--num-classes", "4",
                 "--no-progress"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert f"rulstm-import: error: {evil}: refused" in err and "Traceback" not in err
    with pytest.raises(DemoError, match=rf"--detections: {evil}: refused"):
        DetectionFeatures(evil, num_classes=4)
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("protocol", [2, None])
def test_the_authors_layout_loads_with_no_option(tmp_path, protocol):
    path = _authors_npy(tmp_path / "P01_01.npy", protocol=protocol)
    frames = load_detection_file(path)
    assert [f.shape for f in frames] == [(2, 6), (0, 6), (1, 6)]
    np.testing.assert_array_equal(frames[0][:, 5], [0.5, 0.25])
    features = DetectionFeatures(path, num_classes=4).features
    np.testing.assert_array_equal(features[0], [0, 0.25, 0, 0.5])
