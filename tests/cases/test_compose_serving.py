"""The completion pipeline: in process (what a replica answers) and behind the real server
on loopback. A good prompt is completed to the end of its line; each bad request gets a 400
that names the problem, and the next request succeeds."""

import httpx
import numpy as np
import pytest

from deploylab import serve
from deploylab.cases import compose
from deploylab.cases.compose.serving import ComposePipeline, local_infer
from deploylab.widgets.compose import side_by_side

SMOKE = {"sizes": compose.ModelSizes.preset("smoke"),
         "settings": compose.TrainSettings.preset("smoke")}
CODE = "import os\n\n\ndef list_files(folder):\n"


@pytest.fixture(scope="module")
def pipe():
    p = ComposePipeline(variant="speculative-int8", **SMOKE)
    p.load(threads=1)
    return p


def test_a_prompt_is_completed_to_the_end_of_its_line(pipe):
    status, out = local_infer(pipe, CODE, 12)
    assert status == 200 and out["new_tokens"][0] <= 12
    assert "\n" not in out["completion"][0]
    assert out["total_ms"][0] >= out["ttft_ms"][0] > 0


@pytest.mark.parametrize("prompt,n,reason", [("", 8, "prompt is empty"),
                                             (CODE, 0, "between 1 and 64, got 0"),
                                             (CODE, -2, "between 1 and 64, got -2"),
                                             (CODE, 65, "between 1 and 64, got 65")])
def test_bad_requests_get_400_and_the_next_one_works(pipe, prompt, n, reason):
    status, out = local_infer(pipe, prompt, n)
    assert status == 400 and reason in out["error"]
    assert local_infer(pipe, CODE, 4)[0] == 200


def test_an_over_long_prompt_keeps_its_last_tokens_or_is_refused(pipe):
    long = "x = 1\n" * 400
    assert local_infer(pipe, long, 8)[0] == 200
    strict = ComposePipeline(variant="kv-cache-fp32", truncate=False, **SMOKE)
    status, out = local_infer(strict, long, 8)
    assert status == 400 and "truncate=True" in out["error"]


def test_the_local_client_speaks_the_protocol(pipe):
    client = serve.LocalClient(serve.ModelSpec("compose", "1", pipe, max_batch_size=1))
    out = client.infer("compose", {"prompt": [CODE], "max_new_tokens": np.array([6])})
    assert out["completion"].shape == (1,) and out["new_tokens"][0] <= 6
    with pytest.raises(serve.InferenceError, match="400"):
        client.infer("compose", {"prompt": [""], "max_new_tokens": np.array([6])})


def test_the_widget_table_shows_each_models_suggestion(pipe):
    pair = compose.train_pair(**SMOKE, progress=False)
    from functools import partial

    gens = {"baseline": partial(compose.naive, pair.target),
            "optimized": partial(compose.speculative, pair.target, pair.draft)}
    table = side_by_side(gens, pair.tokenizer, CODE, 8)
    assert list(table.index) == ["baseline", "optimized"]
    assert table.loc["baseline", "suggestion"] == table.loc["optimized", "suggestion"]
    with pytest.raises(compose.ComposeError, match="type some code"):
        side_by_side(gens, pair.tokenizer, "", 8)


@pytest.mark.slow
def test_the_server_completes_and_survives_bad_requests():
    spec = serve.ModelSpec("compose", "1", ComposePipeline(**SMOKE), max_batch_size=2)
    with serve.start(spec, threads=1) as server:
        def post(prompt, n):
            body = {"inputs": [{"name": "prompt", "datatype": "BYTES", "shape": [1],
                                "data": [prompt]},
                               {"name": "max_new_tokens", "datatype": "INT64", "shape": [1],
                                "data": [n]}]}
            return httpx.post(f"{server.url}/v2/models/compose/infer", json=body,
                              trust_env=False, timeout=60)

        assert post(CODE, 8).status_code == 200
        bad = post("", 8)
        assert bad.status_code == 400 and "empty" in bad.text
        assert post(CODE, 0).status_code == 400
        ok = post(CODE, 8).json()
        assert {o["name"] for o in ok["outputs"]} == {"completion", "new_tokens", "ttft_ms",
                                                      "total_ms"}
