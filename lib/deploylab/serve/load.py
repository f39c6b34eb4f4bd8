"""Load generators for an OIP server: closed loop (N clients, each sends its next request
when the last one is answered) and open loop (requests leave at a fixed rate whatever the
server does), bounded in time and count, aimed at loopback only.

The two answer different questions. A closed loop measures the most a server does with N
users waiting on it, but it slows down with the server, so it hides queueing. An open loop
keeps sending at the arrival rate real traffic has; its latency is measured from when a
request *should* have left (avoiding "coordinated omission"), so queueing shows up.

Example:
    >>> from deploylab.serve import load
    >>> bodies = [load.text_request(t) for t in texts]
    >>> r = load.closed_loop(server.url, "minilm", bodies, concurrency=16, duration_s=10)
    >>> r.summary()     # throughput_per_s, latency_ms_p50/p90/p99, errors by status
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlparse

import numpy as np

__all__ = ["LoadResult", "closed_loop", "open_loop", "sweep", "text_request"]

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def text_request(*texts: str, name: str = "text") -> bytes:
    """A ready-to-send JSON body carrying texts as one BYTES input."""
    return json.dumps({"inputs": [{"name": name, "datatype": "BYTES", "shape": [len(texts)],
                                   "data": list(texts)}]}).encode()


@dataclass
class LoadResult:
    """What a load run saw: one record per request.

    Attributes:
        mode (str): "closed" or "open".
        duration_s (float): wall time from the first send to the last answer.
        records (list[tuple[float, float, int, str]]): (sent at, seconds since the start;
            latency in seconds; HTTP status, 0 when no response came; error message).
        concurrency (int | None): closed loop's clients.
        rate (float | None): open loop's requests per second.
        late (int): open loop: requests that left later than planned (client saturated).
    """

    mode: str
    duration_s: float
    records: list[tuple[float, float, int, str]] = field(default_factory=list)
    concurrency: int | None = None
    rate: float | None = None
    late: int = 0

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def ok(self) -> int:
        return sum(1 for r in self.records if r[2] == 200)

    @property
    def errors(self) -> dict[int, int]:
        """HTTP status (0: no response) -> count, for every request that was not a 200."""
        out: dict[int, int] = {}
        for r in self.records:
            if r[2] != 200:
                out[r[2]] = out.get(r[2], 0) + 1
        return out

    def latency_ms(self, q: float) -> float:
        """A percentile of the successful requests' latency, in milliseconds."""
        lat = [r[1] for r in self.records if r[2] == 200]
        return float(np.percentile(lat, q) * 1e3) if lat else float("nan")

    @property
    def throughput_per_s(self) -> float:
        """Successful requests per second of the run."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> dict:
        return {"mode": self.mode, "concurrency": self.concurrency, "rate": self.rate,
                "requests": self.requests, "ok": self.ok,
                "errors": sum(self.errors.values()), "errors_by_status": self.errors,
                "throughput_per_s": self.throughput_per_s,
                "latency_ms_p50": self.latency_ms(50), "latency_ms_p90": self.latency_ms(90),
                "latency_ms_p99": self.latency_ms(99), "duration_s": self.duration_s,
                "late": self.late}

    def table(self):
        """The records as a pandas DataFrame (t_s, latency_ms, status, error)."""
        import pandas as pd

        return pd.DataFrame([(t, lat * 1e3, s, e) for t, lat, s, e in self.records],
                            columns=["t_s", "latency_ms", "status", "error"])


def _targets(url: str | Sequence[str], model: str, version: str | None,
             allow_remote: bool) -> list[str]:
    """The infer URL on each server; several servers share the load in turn (client-side
    balancing, as over the replicas' own endpoints: `server.replica_urls()`)."""
    urls = [url] if isinstance(url, str) else list(url)
    if not urls:
        raise ValueError("give a server URL (or a list of them)")
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    for u in urls:
        host = urlparse(u).hostname
        if host not in _LOOPBACK and not allow_remote:
            raise ValueError(f"load generators aim at this machine only (127.0.0.1), not "
                             f"{host!r}; pass allow_remote=True for a server you own")
    return [u.rstrip("/") + path for u in urls]


def _check(bodies, duration_s: float, max_requests: int | None) -> list[bytes]:
    if not bodies:
        raise ValueError("give at least one request body")
    if not 0 < duration_s <= 600:
        raise ValueError(f"duration_s must be in (0, 600], got {duration_s!r}")
    if max_requests is not None and max_requests < 1:
        raise ValueError(f"max_requests must be >= 1, got {max_requests!r}")
    return [b if isinstance(b, bytes) else json.dumps(b).encode() for b in bodies]


def _run(coro_fn: Callable[[], object]):
    """Run a coroutine on a fresh event loop in a worker thread, so this works in Jupyter
    (whose own loop is already running) as well as in scripts. The loop is uvloop's where
    it is installed (Ray Serve brings it): the clients share the cores with the server they
    measure, and with it they take about a tenth less CPU per request (137 against 150 us)."""
    try:
        import uvloop
        run = uvloop.run
    except ImportError:  # e.g. on Windows
        run = asyncio.run
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: run(coro_fn())).result()


async def _send(session, url: str, body: bytes, start: float, sent: float, records: list):
    import aiohttp

    status, error = 0, ""
    try:
        async with session.post(url, data=body,
                                headers={"content-type": "application/json"}) as r:
            payload = await r.read()
            status = r.status
            if status != 200:
                error = payload[:300].decode(errors="replace")
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        error = f"{type(e).__name__}: {e}"
    records.append((sent - start, time.perf_counter() - sent, status, error))


def _schedule(loop, start: float, events: Mapping[float, Callable[[], object]] | None):
    """Run each event (e.g. killing a replica) at its offset, in a thread."""
    return [loop.call_at(loop.time() + max(0.0, at - (time.perf_counter() - start)),
                         lambda f=fn: loop.run_in_executor(None, f))
            for at, fn in (events or {}).items()]


def closed_loop(url: str | Sequence[str], model: str, bodies: Sequence[bytes | dict], *,
                concurrency: int = 16, duration_s: float = 10.0,
                max_requests: int | None = None, version: str | None = None,
                timeout_s: float = 30.0, events: Mapping[float, Callable] | None = None,
                allow_remote: bool = False) -> LoadResult:
    """N concurrent clients, each sending its next request when the last is answered.

    Args:
        url (str | Sequence[str]): the server, e.g. `server.url`; or several (e.g. the
            replicas' own endpoints, `server.replica_urls()`), client i aiming at the i-th
            in turn: client-side balancing, with no proxy hop.
        model (str): the model name.
        bodies (Sequence[bytes | dict]): request bodies, used in turn.
        concurrency (int, default 16): clients.
        duration_s (float, default 10): no request starts after this (at most 600).
        max_requests (int | None, default None): stop after this many requests.
        version (str | None, default None): a model version; the latest if None.
        timeout_s (float, default 30): per-request timeout (counted as status 0).
        events (Mapping[float, Callable] | None): seconds from the start -> function to
            call then in a thread (fault injection: `{2.0: server.kill_replica}`).
        allow_remote (bool, default False): permit a host other than loopback.

    Returns:
        LoadResult.
    """
    targets = _targets(url, model, version, allow_remote)
    payloads = _check(bodies, duration_s, max_requests)
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")

    async def main() -> LoadResult:
        import aiohttp

        records: list = []
        counter = itertools.count()
        limit = max_requests or float("inf")
        conn = aiohttp.TCPConnector(limit=concurrency)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            start = time.perf_counter()
            handles = _schedule(asyncio.get_running_loop(), start, events)

            async def client(target: str):
                while time.perf_counter() - start < duration_s:
                    i = next(counter)
                    if i >= limit:
                        return
                    await _send(session, target, payloads[i % len(payloads)], start,
                                time.perf_counter(), records)

            await asyncio.gather(*(client(targets[c % len(targets)])
                                   for c in range(concurrency)))
            for h in handles:
                h.cancel()
            return LoadResult("closed", time.perf_counter() - start, records,
                              concurrency=concurrency)

    return _run(main)


def open_loop(url: str | Sequence[str], model: str, bodies: Sequence[bytes | dict], *,
              rate: float = 50.0, duration_s: float = 10.0, max_requests: int | None = None,
              version: str | None = None, poisson: bool = False, seed: int = 0,
              max_in_flight: int = 512, timeout_s: float = 30.0,
              events: Mapping[float, Callable] | None = None,
              allow_remote: bool = False) -> LoadResult:
    """Requests leave at a fixed rate (or Poisson arrivals at that mean rate), answered or
    not; latency counts from each request's planned departure.

    Args:
        rate (float, default 50): requests per second.
        poisson (bool, default False): exponential gaps instead of even ones.
        seed (int, default 0): seed of the Poisson gaps.
        max_in_flight (int, default 512): most unanswered requests; beyond it sends wait
            (and count as late), which bounds memory when the server falls behind.
        The other arguments are as in `closed_loop` (several URLs take requests in turn).

    Returns:
        LoadResult (with `late`: requests that left after their planned time).
    """
    targets = _targets(url, model, version, allow_remote)
    payloads = _check(bodies, duration_s, max_requests)
    if not 0 < rate <= 10_000:
        raise ValueError(f"rate must be in (0, 10000] requests/s, got {rate!r}")
    n = int(rate * duration_s) if max_requests is None else min(max_requests,
                                                                int(rate * duration_s))
    rng = random.Random(seed)
    gaps = [rng.expovariate(rate) if poisson else 1.0 / rate for _ in range(max(n, 1))]
    planned = np.cumsum([0.0, *gaps[:-1]])

    async def main() -> LoadResult:
        import aiohttp

        records: list = []
        late = 0
        gate = asyncio.Semaphore(max_in_flight)
        conn = aiohttp.TCPConnector(limit=max_in_flight)
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
            start = time.perf_counter()
            handles = _schedule(asyncio.get_running_loop(), start, events)

            async def one(i: int, due: float):
                async with gate:
                    await _send(session, targets[i % len(targets)],
                                payloads[i % len(payloads)], start, start + due, records)

            tasks = []
            for i, due in enumerate(planned):
                wait = start + due - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif wait < -0.005 or gate.locked():
                    late += 1
                tasks.append(asyncio.create_task(one(i, float(due))))
            await asyncio.gather(*tasks)
            for h in handles:
                h.cancel()
            return LoadResult("open", time.perf_counter() - start, records, rate=rate,
                              late=late)

    return _run(main)


def sweep(server, model: str, bodies: Sequence[bytes | dict], *,
          settings: Mapping[str, Mapping], concurrencies: Sequence[int] = (16,),
          duration_s: float = 5.0, warmup_s: float = 1.0, version: str | None = None,
          url: str | Sequence[str] | None = None):
    """Closed-loop runs over server settings x concurrency levels, one after another on
    the same server (settings applied with `server.configure`, no restart).

    Args:
        server (Server): a running server.
        model (str): the model to load.
        bodies (Sequence[bytes | dict]): request bodies.
        settings (Mapping[str, Mapping]): label -> keyword arguments of
            `server.configure` (max_batch_size, batch_wait_timeout_s, num_replicas).
        concurrencies (Sequence[int], default (16,)): clients per run.
        duration_s (float, default 5): each measured run.
        warmup_s (float, default 1): an unmeasured run after each change.
        version (str | None, default None): the model version.
        url (str | Sequence[str] | None, default None): where the load goes; None:
            `server.url` (the proxy). The replicas' own endpoints (`server.replica_urls()`)
            skip the proxy's hop; they change when replicas are replaced, so keep the
            replica count fixed, or pass "replicas" to look them up after each change.

    Returns:
        pandas.DataFrame: one row per (setting, concurrency): throughput_per_s,
        latency_ms_p50/p90/p99, errors, and from the server's metrics mean_batch_size (rows
        per model call) and model_busy (the share of the run each replica's model worker
        spent computing; the rest went to HTTP, parsing and answering, or waiting for
        requests).
    """
    import pandas as pd

    from .monitor import batch_totals

    client = server.client()
    target = url or server.url
    rows = []
    for label, config in settings.items():
        server.configure(**config)
        if url == "replicas":
            target = server.replica_urls()
        workers = max(1, len(server.replicas())) * server.workers
        for c in concurrencies:
            closed_loop(target, model, bodies, concurrency=c, duration_s=warmup_s,
                        version=version)
            before = batch_totals(client.metrics(), model)
            res = closed_loop(target, model, bodies, concurrency=c,
                              duration_s=duration_s, version=version).summary()
            batches, n, seconds = batch_totals(client.metrics(), model) - before
            rows.append({"setting": label, "concurrency": c,
                         **{k: res[k] for k in ("throughput_per_s", "latency_ms_p50",
                                                "latency_ms_p90", "latency_ms_p99", "errors")},
                         "mean_batch_size": n / batches if batches else float("nan"),
                         "model_busy": seconds / (res["duration_s"] * workers)})
    client.close()
    return pd.DataFrame(rows)
