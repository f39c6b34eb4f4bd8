"""The Ray Serve deployment: one HTTP entry point per replica that speaks the Open Inference
Protocol, holds every registered model version, and batches each model's requests with
`@serve.batch` (a separate queue per model version).

Why one deployment rather than an ingress in front of model deployments: on a laptop every
hop between Ray actors costs a serialization and a context switch, and with two cores that
overhead, not the model, limits throughput. Replicas of this one deployment scale out (and
autoscale) as a unit; each replica keeps its own batch queues.

Why a route table of its own rather than a FastAPI ingress: the protocol has eleven fixed
routes, and FastAPI's middleware, routing and dependency layers cost about an eighth of a
replica's throughput on two cores (one replica, batched: about 500 against 570 requests/s).
Requests reach `__call__` as Starlette requests; Serve sends the Response returned.

Importing this module imports Ray Serve; `deploylab.serve.start` does it lazily.
"""

import asyncio
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from .metrics import Metrics
from .models import version_order
from .protocol import ProtocolError, parse_request, render_response

__all__ = ["ROUTES", "ModelServer"]

log = logging.getLogger("ray.serve")

# (method, path template, handler); {name} and {version} match one path segment
ROUTES = [
    ("GET", "/v2/health/live", "live"),
    ("GET", "/v2/health/ready", "ready"),
    ("GET", "/v2", "server_metadata"),
    ("POST", "/v2/repository/index", "repository_index"),
    ("GET", "/v2/models/{name}", "model_metadata"),
    ("GET", "/v2/models/{name}/versions/{version}", "model_metadata"),
    ("GET", "/v2/models/{name}/ready", "model_ready"),
    ("GET", "/v2/models/{name}/versions/{version}/ready", "model_ready"),
    ("POST", "/v2/models/{name}/infer", "infer"),
    ("POST", "/v2/models/{name}/versions/{version}/infer", "infer"),
    ("GET", "/metrics", "metrics"),
]
_TABLE = [(m, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", t) + "$"), h)
          for m, t, h in ROUTES]


def _match(method: str, path: str) -> tuple[str, dict]:
    """(handler name, path parameters); a ProtocolError 404 for a path outside the protocol,
    405 for a method it does not take there. HEAD is answered as GET."""
    method = "GET" if method == "HEAD" else method
    allowed = []
    for m, pattern, handler in _TABLE:
        found = pattern.match(path)
        if found:
            if m == method:
                return handler, found.groupdict()
            allowed.append(m)
    hint = "see /v2/models/{name} and /v2/models/{name}/infer"
    if allowed:
        raise ProtocolError(f"{method} {path}: Method Not Allowed (use {allowed[0]}); {hint}",
                            405, "method_not_allowed")
    raise ProtocolError(f"{method} {path}: Not Found; {hint}", 404, "no_route")


class _Pool(ThreadPoolExecutor):
    """A model's batches run on its own threads (one per worker), so the event loop keeps
    parsing requests (ONNX Runtime and torch release the GIL while they compute)."""


@serve.deployment(name="ModelServer")
class ModelServer:
    """One replica: every model version, its batch queue, and the protocol's routes.

    Args:
        specs (list[ModelSpec]): the model versions to load.
        settings (dict): threads (int | None), workers (int: batches of one model run at
            once, sharing its weights), max_body_bytes (int), max_text_chars (int).
        store (ray.actor.ActorHandle | None): the metrics store shared by all replicas.
    """

    def __init__(self, specs, settings: dict, store=None):
        self.settings = settings
        self.runners, self.versions, self.batchers = {}, {}, {}
        self.batching: dict[str, dict] = {}  # the limits in force, which `reconfigure` changes
        for spec in specs:
            runner = spec.build(settings.get("threads"))
            self.runners[spec.key] = runner
            self.versions.setdefault(spec.name, []).append(spec.version)
            self.batching[spec.key] = {"max_batch_size": spec.max_batch_size,
                                       "batch_wait_timeout_s": spec.batch_wait_timeout_s}
            self.batchers[spec.key] = self._batcher(runner)
        for vs in self.versions.values():
            vs.sort(key=version_order)
        self.metrics, self.store, self._pusher = Metrics(), store, None
        self.replica = serve.get_replica_context().replica_tag

    def _batcher(self, runner):
        workers = int(self.settings.get("workers", 1))
        pool = _Pool(workers, thread_name_prefix=f"model-{runner.spec.key}")
        labels = {"model": runner.spec.name, "version": runner.spec.version}

        async def call(items: list) -> list:
            start = time.perf_counter()
            outs = await asyncio.get_running_loop().run_in_executor(pool, runner.run, items)
            self.metrics.observe("deploylab_inference_seconds", labels,
                                 time.perf_counter() - start)
            self.metrics.observe("deploylab_batch_size", labels,
                                 sum(runner.rows(i) for i in items))
            return outs

        async def alone(item):
            try:
                return (await call([item]))[0]
            except ProtocolError as e:  # the model refused this request's values: a 4xx
                return e
            except Exception as e:  # the model failed: this request gets a 500
                log.exception("model %s failed on a request", runner.spec.key)
                return e

        async def run_batch(items: list) -> list:
            if len(items) == 1:
                return [await alone(items[0])]
            try:
                return await call(items)
            except Exception:
                # one request the model cannot take fails the whole call: run each alone,
                # so that only that request fails and the others are answered
                log.warning(json.dumps({"event": "batch_failed", "model": runner.spec.key,
                                        "items": len(items), "then": "each alone"}))
                return [await alone(item) for item in items]

        return serve.batch(max_batch_size=runner.spec.max_batch_size,
                           batch_wait_timeout_s=runner.spec.batch_wait_timeout_s,
                           max_concurrent_batches=workers,
                           batch_size_fn=lambda items: sum(runner.rows(i) for i in items)
                           )(run_batch)

    def reconfigure(self, config: dict) -> None:
        """Serve calls this with the deployment's `user_config` (no restart needed):
        {"max_batch_size": int, "batch_wait_timeout_s": float}, applied to every model."""
        for key, batcher in self.batchers.items():
            if config.get("max_batch_size"):
                batcher.set_max_batch_size(int(config["max_batch_size"]))
                self.batching[key]["max_batch_size"] = int(config["max_batch_size"])
            if config.get("batch_wait_timeout_s") is not None:
                batcher.set_batch_wait_timeout_s(float(config["batch_wait_timeout_s"]))
                self.batching[key]["batch_wait_timeout_s"] = float(config["batch_wait_timeout_s"])

    # ------------------------------------------------------------------ helpers

    def _lookup(self, name: str, version: str | None):
        if name not in self.versions:
            raise ProtocolError(f"unknown model {name!r}; this server has "
                                f"{sorted(self.versions)}", 404, "unknown_model")
        versions = self.versions[name]
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise ProtocolError(f"model {name!r} has no version {version!r}; it has "
                                f"{versions}", 404, "unknown_version")
        return self.runners[f"{name}:{version}"]

    async def _body(self, request: Request) -> bytes:
        limit = self.settings["max_body_bytes"]
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ProtocolError(f"request body of {declared} bytes is over the limit of "
                                f"{limit} bytes", 413, "body_too_large")
        # read in chunks, so that a body sent without a length (chunked) stops at the limit
        # rather than filling the replica's memory first
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"request body (sent without a length) runs over the "
                                    f"limit of {limit} bytes", 413, "body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def _count(self, model: str, version: str, code: int, reason: str | None, start: float):
        self.metrics.inc("deploylab_requests_total",
                         {"model": model, "version": version, "code": str(code)})
        if reason is not None:
            self.metrics.inc("deploylab_errors_total",
                             {"model": model, "code": str(code), "reason": reason})
        if code == 200:
            self.metrics.observe("deploylab_request_latency_seconds",
                                 {"model": model, "version": version},
                                 time.perf_counter() - start)
        if self._pusher is None and self.store is not None:
            self._pusher = asyncio.get_running_loop().create_task(self._push_loop())

    async def _push_loop(self) -> None:
        seen = -1
        while True:
            await asyncio.sleep(0.5)
            if self.metrics.version != seen:
                seen = self.metrics.version
                self.store.push.remote(self.replica, self.metrics.snapshot())

    async def _infer(self, name: str, version: str | None, request: Request):
        start = time.perf_counter()
        model, ver, code, reason = "unknown", "unknown", 200, None
        try:
            runner = self._lookup(name, version)
            model, ver = runner.spec.name, runner.spec.version
            req = parse_request(await self._body(request), runner.inputs, runner.outputs,
                                max_rows=self.batching[runner.spec.key]["max_batch_size"],
                                max_text_chars=runner.max_text_chars
                                or self.settings["max_text_chars"])
            out = await self.batchers[runner.spec.key](runner.prepare(req))
            if isinstance(out, Exception):
                raise out
            return Response(render_response(model, ver, req.id,
                                            {k: out[k] for k in req.outputs}),
                            media_type="application/json")
        except ProtocolError as e:
            code, reason = e.status, e.reason
            log.warning(json.dumps({"event": "refused", "model": name, "code": code,
                                    "reason": reason, "message": str(e)}))
            return JSONResponse({"error": str(e)}, status_code=code)
        except asyncio.CancelledError:
            # Serve cancels a request past its timeout (the client got a 504) or whose client
            # hung up, and the replica cannot tell which: nginx's 499, never a 200
            code, reason = 499, "cancelled"
            log.warning(json.dumps({"event": "cancelled", "model": name, "code": code,
                                    "after_s": round(time.perf_counter() - start, 3)}))
            raise
        except Exception as e:
            code, reason = 500, "model_error"
            return JSONResponse({"error": f"model {name!r} failed: {type(e).__name__}: {e}"},
                                status_code=500)
        finally:
            self._count(model, ver, code, reason, start)

    # ------------------------------------------------------------------- routes

    async def __call__(self, request: Request) -> Response:
        try:
            # the scope's path: `request.url` would build a URL object on every request
            handler, params = _match(request.method, request.scope["path"])
        except ProtocolError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        if handler == "infer":
            return await self._infer(params["name"], params.get("version"), request)
        return await getattr(self, f"_{handler}")(**params)

    async def _live(self):
        return JSONResponse({"live": True})

    async def _ready(self):
        return JSONResponse({"ready": True})

    async def _server_metadata(self):
        from .. import __version__

        return JSONResponse({"name": "deploylab", "version": __version__,
                             "extensions": ["model_repository", "metrics"]})

    async def _repository_index(self):
        return JSONResponse([{"name": n, "version": v, "state": "READY"}
                             for n, vs in sorted(self.versions.items()) for v in vs])

    async def _model_metadata(self, name: str, version: str | None = None):
        try:
            runner = self._lookup(name, version)
        except ProtocolError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        meta = runner.metadata()
        meta["parameters"].update(self.batching[runner.spec.key])
        return JSONResponse({**meta, "versions": self.versions[name]})

    async def _model_ready(self, name: str, version: str | None = None):
        try:
            runner = self._lookup(name, version)
        except ProtocolError as e:
            return JSONResponse({"error": str(e)}, status_code=e.status)
        return JSONResponse({"name": name, "version": runner.spec.version, "ready": True})

    async def _metrics(self):
        from .metrics import render

        if self.store is None:
            return PlainTextResponse(render([self.metrics.snapshot()]))
        self.store.push.remote(self.replica, self.metrics.snapshot())  # ours, fresh
        return PlainTextResponse(await self.store.render.remote())
