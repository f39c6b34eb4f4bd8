import numpy as np
import pytest
import torch

from deploylab import assets
from deploylab.cases.sentence_encoder import encode, mean_pool


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])  # last token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert mean_pool(hidden, mask).tolist() == [[1.0, 0.0]]


@pytest.fixture(scope="module")
def minilm():
    return assets.load_encoder("minilm")


@pytest.mark.slow
def test_encode_gives_unit_vectors_that_rank_by_meaning(minilm):
    model, tokenizer = minilm[1], minilm[0]
    vecs = encode(model, tokenizer, ["Return the square root of x.", "square root of a number",
                                     "Open a file for reading."], batch_size=2)
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[1, 2]


def test_encode_batches_agree_with_one_batch(minilm):
    tokenizer, model = minilm
    texts = ["a", "bb bb", "ccc ccc ccc"]
    np.testing.assert_allclose(encode(model, tokenizer, texts, batch_size=1),
                               encode(model, tokenizer, texts, batch_size=3), atol=1e-5)


def test_encode_refuses_a_bare_string(minilm):
    tokenizer, model = minilm
    with pytest.raises(TypeError, match="sequence of strings"):
        encode(model, tokenizer, "just one")
    assert encode(model, tokenizer, []).shape == (0, 384)
