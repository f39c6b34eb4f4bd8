"""The code-completion case: the tokenizer round-trips source exactly, greedy decoding gives
the same tokens with and without the KV cache, with speculative decoding, through
transformers' generate() and through ONNX Runtime; perplexity and the line metrics are
computed right; bad requests get clear errors."""

import math

import numpy as np
import pytest
import torch

from deploylab.cases import compose
from deploylab.cases.compose import ComposeError
from deploylab.errors import DeploylabError


@pytest.fixture(scope="module")
def pair():
    return compose.train_pair(compose.ModelSizes.preset("smoke"),
                              compose.TrainSettings.preset("smoke"), progress=False)


@pytest.fixture(scope="module")
def split():
    return compose.source_split(max_files=compose.TrainSettings.preset("smoke").max_files)


@pytest.fixture(scope="module")
def prompts(pair, split):
    tasks = compose.completion_tasks(pair.tokenizer, split.held_out, 3, context_tokens=64)
    return [t.prompt_ids for t in tasks]


# ------------------------------------------------------------------------- data


def test_the_split_is_by_file_disjoint_and_repeatable(split):
    again = compose.source_split(max_files=30)
    assert split.key == again.key and split.train and split.held_out
    assert not {f.module for f in split.train} & {f.module for f in split.held_out}


@pytest.mark.parametrize("text", ["def f(x):\n\treturn x  # tab\n", "s = 'héllo wörld ✓'\n",
                                  "a = 1\r\nb = 2\r\n", "   trailing   \n\n\n", "\n", "x"])
def test_the_tokenizer_round_trips_odd_text_exactly(pair, text):
    assert pair.tokenizer.decode(pair.tokenizer.encode(text).ids) == text


def test_the_tokenizer_round_trips_every_held_out_file(pair, split):
    tok = pair.tokenizer
    for f in split.held_out:
        assert tok.decode(tok.encode(f.text).ids) == f.text, f.module
    nl = compose.newline_id(tok)
    assert tok.encode("x = 1\n    y").ids.count(nl) == 1  # a newline is its own token


def test_completion_tasks_end_at_a_newline_and_predict_the_next_line(pair, split):
    tok = pair.tokenizer
    tasks = compose.completion_tasks(tok, split.held_out, 5, context_tokens=64, seed=3)
    for t in tasks:
        assert t.prompt_tokens == 64 and t.prompt_ids[-1] == compose.newline_id(tok)
        source = next(f.text for f in split.held_out if f.module == t.module)
        assert source.split("\n")[t.line_no - 1] == t.target
        assert (tok.decode(t.prompt_ids) + t.target) in source
    with pytest.raises(ComposeError, match=r"only .* completion tasks"):
        compose.completion_tasks(tok, split.held_out[:1], 10_000, context_tokens=64)


# --------------------------------------------------------------------- generation


def test_greedy_is_the_same_with_and_without_cache_and_with_speculation(pair, prompts):
    t, d = pair.target, pair.draft
    for p in prompts:
        ref = compose.naive(t, p, 12).ids
        assert compose.kv_cache(t, p, 12).ids == ref
        for k in (1, 3, 5):
            spec = compose.speculative(t, d, p, 12, k=k)
            assert spec.ids == ref and spec.proposed >= spec.accepted >= 0
            assert spec.target_calls <= 12
        assert compose.hf_generate(t, p, 12, use_cache=False).ids == ref
        assert compose.hf_generate(t, p, 12).ids == ref
        assert compose.hf_generate(t, p, 12, assistant=d).ids == ref  # transformers' own


def test_the_int8_target_is_greedy_consistent_with_its_speculative_decoding(pair, prompts):
    q = compose.int8_dynamic(pair.target)
    assert compose.model_size_mb(q) < compose.model_size_mb(pair.target) * 1.2
    for p in prompts:
        assert compose.speculative(q, pair.draft, p, 10).ids == compose.kv_cache(q, p, 10).ids


def test_a_stop_token_ends_the_line_and_is_kept(pair, prompts):
    free = compose.kv_cache(pair.target, prompts[0], 16).ids[0]
    stop = free[2]
    cut = compose.kv_cache(pair.target, prompts[0], 16, stop=stop).ids[0]
    assert cut == free[:free.index(stop) + 1]
    assert compose.naive(pair.target, prompts[0], 16, stop=stop).ids[0] == cut
    assert compose.speculative(pair.target, pair.draft, prompts[0], 16, stop=stop).ids[0] == cut


def test_batched_greedy_equals_one_prompt_at_a_time(pair, prompts):
    both = compose.kv_cache(pair.target, prompts[:2], 8)
    assert both.ids == [compose.kv_cache(pair.target, p, 8).ids[0] for p in prompts[:2]]
    assert both.new_tokens == 16 and both.tokens_per_s > 0


def test_sampling_repeats_with_its_seed(pair, prompts):
    s = compose.Sampling(temperature=1.0, top_k=20, seed=7)
    a = compose.kv_cache(pair.target, prompts[0], 12, sampling=s).ids
    assert compose.kv_cache(pair.target, prompts[0], 12, sampling=s).ids == a
    seeds = {tuple(compose.kv_cache(pair.target, prompts[0], 12, sampling=compose.Sampling(
        temperature=1.5, top_k=50, seed=i)).ids[0]) for i in range(4)}
    assert len(seeds) > 1
    with pytest.raises(ComposeError, match="temperature must be > 0"):
        compose.Sampling(temperature=0)


@pytest.mark.parametrize("loop", ["naive", "kv_cache", "speculative", "hf_generate"])
def test_bad_requests_get_clear_errors(pair, loop):
    fn = getattr(compose, loop)
    args = (pair.target, pair.draft) if loop == "speculative" else (pair.target,)
    context = pair.target.config.max_position_embeddings
    with pytest.raises(ComposeError, match="the prompt is empty"):
        fn(*args, [], 4)
    for bad in (0, -3):
        with pytest.raises(ComposeError, match="max_new_tokens must be >= 1"):
            fn(*args, [1, 2, 3], bad)
    with pytest.raises(ComposeError, match="must be an int"):
        fn(*args, [1, 2, 3], 2.5)
    with pytest.raises(ComposeError, match=f"only {context - 4} fit .* truncate=True"):
        fn(*args, [1] * context, 4)
    assert issubclass(ComposeError, DeploylabError)


def test_an_over_long_prompt_can_keep_its_last_tokens(pair, prompts):
    context = pair.target.config.max_position_embeddings
    long = [5] * (context + 40) + prompts[0][-50:]
    (kept,) = compose.check_request(long, 8, context, truncate=True)
    assert kept == long[-(context - 8):]
    assert compose.kv_cache(pair.target, long, 8, truncate=True).ids == \
        compose.kv_cache(pair.target, kept, 8).ids


# ------------------------------------------------------------------------ quality


class _Constant(torch.nn.Module):
    """A fake LM whose next-token logits are fixed: perplexity by hand."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, input_ids, use_cache=False):
        b, t = input_ids.shape
        return type("Out", (), {"logits": self.logits.expand(b, t, -1)})()


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    windows = np.random.default_rng(0).integers(0, 50, size=(3, 9))
    assert compose.perplexity(_Constant(np.zeros(50)), windows) == pytest.approx(50.0)


def test_perplexity_matches_a_hand_computation():
    logits = np.log(np.array([0.5, 0.25, 0.125, 0.125]))
    windows = np.array([[0, 0, 1, 2], [3, 0, 0, 0]])  # predicted: 0,1,2 and 0,0,0
    nll = -np.log([0.5, 0.25, 0.125, 0.5, 0.5, 0.5]).mean()
    got = compose.perplexity(_Constant(logits), windows, batch_size=1)
    assert got == pytest.approx(math.exp(nll), rel=1e-6)
    with pytest.raises(ComposeError, match="at least one window"):
        compose.perplexity(_Constant(logits), np.zeros((0, 4), int))


def test_line_metrics_by_hand():
    assert compose.exact_match("    return x  ", "    return x")
    assert not compose.exact_match("return x", "    return x")
    assert compose.char_accuracy("abcd", "abxd") == 0.75
    assert compose.char_accuracy("ab", "abcd") == 0.5
    assert compose.char_accuracy("", "") == 1.0 and compose.char_accuracy("", "ab") == 0.0


def test_the_trained_pair_is_cached_and_its_draft_is_smaller(pair):
    again = compose.train_pair(pair.sizes, pair.settings, progress=False)
    assert not again.trained_now and again.folder == pair.folder
    assert compose.param_count(pair.draft) < compose.param_count(pair.target)
    curves = pair.curves_frame()
    assert len(curves) == pair.settings.steps
    assert curves["target_loss"].iloc[-1] < curves["target_loss"].iloc[0]
    with pytest.raises(ComposeError, match="seq_len"):
        compose.train_pair(pair.sizes, compose.TrainSettings(seq_len=1024), progress=False)


# ---------------------------------------------------------------------------- ONNX


def test_the_onnx_decoder_generates_what_torch_generates(pair, prompts):
    dec = compose.OnnxDecoder(compose.export_decoder(pair.target), threads=1,
                              context=pair.target.config.max_position_embeddings)
    draft = compose.OnnxDecoder(compose.export_decoder(pair.draft), threads=1,
                                context=pair.draft.config.max_position_embeddings)
    for p in prompts:
        ref = compose.kv_cache(pair.target, p, 10).ids
        assert dec.greedy(p, 10).ids == ref
        for k in (1, 3):  # rejected guesses leave the pasts: the text stays the target's
            spec = compose.speculative(dec, draft, p, 10, k=k)
            assert spec.ids == ref and spec.proposed >= spec.accepted >= 0
        assert compose.speculative(dec, pair.draft, p, 10).ids == ref  # any mix of runtimes
    with pytest.raises(ComposeError, match="the prompt is empty"):
        dec.greedy([], 4)
    with pytest.raises(ComposeError, match="the prompt is empty"):
        compose.speculative(dec, draft, [], 4)


def test_the_int4_weight_only_decoder_runs_on_matmulnbits(pair, prompts):
    import onnx

    fp32 = compose.export_decoder(pair.target)
    w4 = compose.export_decoder(pair.target, weight_only_bits=4)
    ops = {n.op_type for n in onnx.load(str(w4)).graph.node}
    assert "MatMulNBits" in ops and w4.stat().st_size < fp32.stat().st_size
    dec = compose.OnnxDecoder(w4, threads=1, context=pair.target.config.max_position_embeddings)
    out = dec.greedy(prompts[0], 6)
    assert len(out.ids[0]) == 6 and all(0 <= i < pair.target.config.vocab_size for i in out.ids[0])
    with pytest.raises(ComposeError, match="not both"):
        compose.export_decoder(pair.target, int8=True, weight_only_bits=4)
