"""Workers: one replica runs batches of a model at once, on threads that share its weights
(the batch queue tested as a replica builds it, without Ray)."""

import asyncio
import threading
from types import SimpleNamespace

import pytest

from deploylab import serve
from deploylab.serve import ModelSpec, Pipeline, TensorSpec
from deploylab.serve.app import ModelServer
from deploylab.serve.metrics import Metrics


class Meeting:
    """A model whose batch returns only once two batches are inside it at the same time."""

    def __init__(self, timeout_s: float):
        self.spec = SimpleNamespace(key="m:1", name="m", version="1", max_batch_size=1,
                                    batch_wait_timeout_s=0.0)
        self.barrier = threading.Barrier(2, timeout=timeout_s)

    def rows(self, item) -> int:
        return 1

    def run(self, items: list) -> list:
        self.barrier.wait()
        return [{"y": item} for item in items]


@pytest.fixture(autouse=True)
def in_a_replica(monkeypatch):
    # Serve's batch queue reads its replica's settings; here there is none to read
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=64),
                              app_name="test", deployment="ModelServer", replica_tag="r0")
    monkeypatch.setattr("ray.serve.get_replica_context", lambda: context)


def _answers(workers: int, runner: Meeting) -> list:
    replica = ModelServer.func_or_class.__new__(ModelServer.func_or_class)
    replica.settings, replica.metrics = {"workers": workers}, Metrics()

    async def two_requests():
        batcher = replica._batcher(runner)
        return await asyncio.gather(batcher("a"), batcher("b"))

    return asyncio.run(two_requests())


def test_two_workers_run_two_batches_at_once():
    assert _answers(2, Meeting(timeout_s=30)) == [{"y": "a"}, {"y": "b"}]


def test_one_worker_runs_one_batch_at_a_time():
    # the first batch waits alone for the second until the barrier gives up
    answers = _answers(1, Meeting(timeout_s=0.5))
    assert all(isinstance(a, threading.BrokenBarrierError) for a in answers)


class Echo(Pipeline):
    inputs = outputs = (TensorSpec("x", "FP32", (-1,)),)


@pytest.mark.parametrize("workers,words", [
    (0, "workers must be an int >= 1"),
    (2, "num_replicas instead"),  # a pipeline need not be thread-safe
])
def test_bad_workers_are_refused_before_anything_starts(workers, words):
    with pytest.raises(serve.ServeError, match=words):
        serve.start(ModelSpec("echo", "1", Echo()), workers=workers)


@pytest.mark.slow
def test_a_served_replica_with_two_workers_computes_two_batches_at_once(nap_spec):
    from deploylab.serve import load

    # each request naps 50 ms, leaving the GIL (and the cores) free
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [0.05, 2]}]}
    with serve.start(nap_spec, workers=2, threads=1) as server:
        assert server.workers == 2
        row = load.sweep(server, "nap", [body], settings={"as started": {}},
                         concurrencies=[8], duration_s=2.0, warmup_s=0.5,
                         url="replicas").iloc[0]
    assert row["errors"] == 0 and row["mean_batch_size"] == 1
    # model_busy is per worker: one worker at a time could compute at most half the run
    assert 0.65 < row["model_busy"] <= 1.05, row["model_busy"]
