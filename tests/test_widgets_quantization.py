import numpy as np
import pytest

from deploylab.widgets import quantization as wq


def test_error_table_shrinks_with_bits_and_granularity():
    table = wq.error_table(wq.demo_weight(), bits=(4, 8))
    by = table.set_index(["bits", "granularity"])["rel_rms_error"]
    assert by[(8, "tensor")] < by[(4, "tensor")]
    assert by[(8, "channel")] < by[(8, "tensor")]


def test_explorer_builds_and_rejects_non_matrices():
    pytest.importorskip("ipywidgets")
    box = wq.quantization_explorer(np.random.default_rng(0).standard_normal((8, 32)))
    assert len(box.children) == 3
    with pytest.raises(ValueError, match="2-D"):
        wq.quantization_explorer(np.zeros(5))
