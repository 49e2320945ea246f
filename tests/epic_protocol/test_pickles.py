"""The numpy-only unpickler: arrays, scalars and dtypes are rebuilt; any other global is
refused before it is called."""

from __future__ import annotations

import codecs
import pickle

import numpy as np
import pytest

from epic_protocol.pickles import RefusedPickleError, load_npy


def test_arrays_load_and_other_globals_are_refused(tmp_path):
    plain = tmp_path / "plain.npy"
    np.save(plain, np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(load_npy(plain), np.arange(6.0).reshape(2, 3))
    mixed = np.empty(3, dtype=object)
    mixed[:] = [np.float32(1.5), np.array([1, 2], dtype=np.int16), np.zeros((0,))]
    path = tmp_path / "mixed.npy"
    np.save(path, mixed, allow_pickle=True)
    loaded = load_npy(path)
    assert loaded[0] == np.float32(1.5) and loaded[1].dtype == np.int16

    class Call:
        def __reduce__(self):
            return (print, ("called",))

    evil = np.empty(1, dtype=object)
    evil[0] = Call()
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    with pytest.raises(RefusedPickleError, match="it names builtins.print"):
        load_npy(tmp_path / "evil.npy")
    assert issubclass(RefusedPickleError, pickle.UnpicklingError)

    class Encode:  # _codecs.encode is allowed for protocol-2 bytes, with latin1 only
        def __reduce__(self):
            return (codecs.encode, ("text", "rot13"))

    evil[0] = Encode()
    np.save(tmp_path / "encode.npy", evil, allow_pickle=True)
    with pytest.raises(RefusedPickleError, match="not latin1"):
        load_npy(tmp_path / "encode.npy")
    (tmp_path / "text.npy").write_text("hello")
    with pytest.raises(ValueError):
        load_npy(tmp_path / "text.npy")
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match="not a readable pickled array"):
        load_npy(truncated)
