import math

import numpy as np

from deploylab._files import to_jsonable, write_atomic


def test_write_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    assert write_atomic(target, "new") == target
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_to_jsonable_turns_numpy_and_non_finite_values_into_json():
    data = {"a": np.float32(1.5), "b": [math.nan, np.inf], 3: np.arange(2), "c": (np.int64(4),)}
    assert to_jsonable(data) == {"a": 1.5, "b": [None, None], "3": [0, 1], "c": [4]}
