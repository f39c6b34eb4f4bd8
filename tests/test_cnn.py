import numpy as np
import pytest
import torch

import deploylab
from deploylab import cnn


@pytest.fixture(scope="module")
def data():
    return cnn.load_digits_split(seed=0)


def test_split_is_seeded_stratified_and_scaled(data):
    again = cnn.load_digits_split(seed=0)
    other = cnn.load_digits_split(seed=1)
    assert data.x_train.shape[1:] == (1, 8, 8) and data.x_train.dtype == torch.float32
    assert len(data.y_train) + len(data.y_test) == 1797
    assert torch.equal(data.y_test, again.y_test) and not torch.equal(data.y_test, other.y_test)
    assert 0.0 <= float(data.x_train.min()) and float(data.x_train.max()) <= 1.0
    assert set(np.unique(data.y_test.numpy())) == set(range(10))


def test_bad_split_arguments_are_refused(data):
    with pytest.raises(ValueError, match="test_fraction"):
        cnn.load_digits_split(test_fraction=1.5)
    with pytest.raises(ValueError, match="split must be"):
        data.split("val")
    with pytest.raises(ValueError, match="channels"):
        cnn.DigitsCNN(channels=(4, 4))


def test_model_shapes_and_untrained_accuracy_is_chance(data):
    deploylab.seed_everything(0)
    model = cnn.DigitsCNN().eval()
    assert model(data.x_test[:5]).shape == (5, 10)
    assert cnn.accuracy(model, data) < 0.3


def test_training_learns_and_is_seeded(data):
    runs = []
    for _ in range(2):
        deploylab.seed_everything(0)
        model = cnn.DigitsCNN(channels=(4, 8, 8), hidden=16)
        runs.append(cnn.train_cnn(model, data, epochs=4, lr=1e-2, seed=0))
    assert runs[0] == runs[1]
    assert runs[0][-1]["test_accuracy"] > 0.5 and not model.training
    assert runs[0][-1]["loss"] < runs[0][0]["loss"]


def test_accuracy_takes_any_callable(data):
    deploylab.seed_everything(0)
    model = cnn.DigitsCNN().eval()
    with torch.inference_mode():
        via_numpy = cnn.accuracy(lambda x: model(torch.from_numpy(x)).numpy(), data)
    assert via_numpy == cnn.accuracy(model, data)
    with pytest.raises(TypeError, match="callable"):
        cnn.predict(42, data.x_test)


def test_pretrained_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOYLAB_CACHE", str(tmp_path))
    small = lambda: cnn.DigitsCNN(channels=(4, 8, 8), hidden=16)  # noqa: E731
    model, _ = cnn.pretrained_cnn(epochs=2, factory=small)
    files = list((tmp_path / "models").glob("digits-cnn-*.pt"))
    assert len(files) == 1 and not list((tmp_path / "models").glob(".*"))
    again, _ = cnn.pretrained_cnn(epochs=2, factory=small)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
