"""Start and stop the inference server from Python: `start(models, ...)` gives a running
`Server` (also a context manager), `stop()` stops the last one.

It starts Ray on this machine (offline: no dashboard, no usage statistics, bound to
127.0.0.1) unless given a cluster address, runs the Serve application, waits until the
server answers `/v2/health/ready`, and on stop shuts Serve and Ray down and checks that no
process it started and no port it opened is left behind.

Example:
    >>> from deploylab import serve
    >>> spec = serve.ModelSpec("minilm", "1", "minilm.onnx", tokenizer="all-MiniLM-L6-v2")
    >>> with serve.start(spec, num_replicas=2) as server:
    ...     server.client().embed("minilm", ["open a file"]).shape      # (1, 384)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import DeploylabError
from .gateway import CALLBACK, ENV
from .models import ModelSpec, check_batching, check_count

__all__ = ["Server", "ServeError", "free_port", "start", "stop"]

_RUNNING: list[Server] = []


class ServeError(DeploylabError):
    """The server could not start, or did not stop cleanly."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class Server:
    """A running inference server (made by `start`; use it as a context manager).

    Attributes:
        url (str): e.g. "http://127.0.0.1:8000".
        models (list[ModelSpec]): what it serves.
        app_name (str): the Serve application's name.
        leftovers (list[str] | None): after `stop()`, processes or ports that outlived it
            (empty when the shutdown was clean).
    """

    def __init__(self, url: str, host: str, port: int, models: list[ModelSpec],
                 app_name: str, started_ray: bool, deployment, args: tuple, options: dict):
        self.url, self.host, self.port, self.models = url, host, port, models
        self.app_name, self._started_ray = app_name, started_ray
        self._deployment, self._args, self._options = deployment, args, options
        self.leftovers: list[str] | None = None

    def __repr__(self) -> str:
        state = "stopped" if self.leftovers is not None else "running"
        return f"Server({self.url}, models={[m.key for m in self.models]}, {state})"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def client(self, **kwargs):
        """A `Client` for this server (keyword arguments go to `Client`)."""
        from .client import Client

        return Client(self.url, **kwargs)

    def configure(self, *, max_batch_size: int | None = None,
                  batch_wait_timeout_s: float | None = None,
                  num_replicas: int | None = None) -> None:
        """Change batching (every model) or the replica count of the running server.

        Serve applies this without restarting replicas (batching goes through the
        deployment's `user_config`, replicas are added or removed); it returns once the
        application is running again.

        Raises:
            ServeError: a value the server cannot run with (checked before anything
                changes, so the server keeps serving as it was).
        """
        from ray import serve

        try:  # the same checks as a ModelSpec's and start()'s
            check_batching(max_batch_size, batch_wait_timeout_s)
        except ValueError as e:
            raise ServeError(str(e)) from None
        try:
            if num_replicas is not None:
                check_count("num_replicas", num_replicas)
        except ValueError as e:
            raise ServeError(f"{e} (stop() takes the server down)") from None
        cfg = dict(self._options.get("user_config") or {})
        if max_batch_size is not None:
            cfg["max_batch_size"] = int(max_batch_size)
        if batch_wait_timeout_s is not None:
            cfg["batch_wait_timeout_s"] = float(batch_wait_timeout_s)
        self._options["user_config"] = cfg
        if num_replicas is not None:
            self._options.pop("autoscaling_config", None)
            self._options["num_replicas"] = int(num_replicas)
        app = _versioned(self._deployment, self._options).bind(*self._args)
        with _quiet_serve():
            serve.run(app, name=self.app_name, route_prefix="/", blocking=False)
        _wait_running(self.app_name, 300)

    @property
    def workers(self) -> int:
        """Batches of one model each replica runs at once (`start(..., workers=)`)."""
        return int(self._args[1].get("workers", 1))

    def replicas(self) -> list[str]:
        """Names of the live replica actors (for `kill_replica`)."""
        import ray

        return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a["name"].startswith(f"SERVE_REPLICA::{self.app_name}#"))

    def replica_urls(self) -> list[str]:
        """Each replica's own HTTP endpoint (Serve's direct ingress), or [] where it is off.

        `url` goes through Serve's proxy, which balances requests over the replicas but
        adds a hop (a second process that parses every request and forwards it); a client
        of one replica can talk to it directly. Both speak the same protocol.
        """
        import ray

        groups = ray.get(_controller().get_target_groups.remote(self.app_name), timeout=30)
        # replicas bind where the proxy does (`host`); Serve reports the node's address
        return sorted(f"http://{self.host}:{t.port}" for g in groups
                      if str(g.protocol).upper().endswith("HTTP") for t in g.targets
                      if t.port != self.port)

    def ray_metrics(self, timeout_s: float = 10.0) -> str:
        """Ray's own Prometheus metrics, read from every live node's endpoint, as one text.

        The kit's `/metrics` counts inside the replicas, so it misses a request no replica
        answered: the 5xx for one a dying replica took with it, or the timeout for a retry
        Serve's router lost. Serve's proxy counts every request it answered
        (`ray_serve_num_http_requests_total` by `status_code`; `monitor.proxy_requests`
        sums it), a timeout under 408, the status it chose before `gateway` sent it as
        504. Ray reports them every 10 s, so they lag by as much.
        """
        import httpx
        import ray

        texts = []
        for node in ray.nodes():
            if node.get("Alive") and node.get("MetricsExportPort"):
                # a private Ray runs on this machine: ask on loopback
                host = "127.0.0.1" if self._started_ray else node["NodeManagerAddress"]
                url = f"http://{host}:{node['MetricsExportPort']}/metrics"
                try:
                    texts.append(httpx.get(url, timeout=timeout_s, trust_env=False).text)
                except httpx.HTTPError as e:
                    raise ServeError(f"Ray's metrics at {url} did not answer ({e}); is the "
                                     "node's metrics agent running?") from e
        return "\n".join(texts)

    def kill_replica(self, name: str | None = None) -> str:
        """Kill one replica process abruptly (as a crash would); Serve starts a new one.

        Args:
            name (str | None, default None): a name from `replicas()`; the first if None.

        Returns:
            str: the killed replica's name.
        """
        import ray

        names = self.replicas()
        if not names:
            raise ServeError("no live replica to kill")
        name = name or names[0]
        ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
        return name

    def log_files(self) -> list[Path]:
        """The replicas' JSON log files (Serve writes them under the Ray session folder)."""
        import ray

        node = ray._private.worker._global_node
        folder = Path(node.get_logs_dir_path()) / "serve" if node else None
        return sorted(folder.glob("replica_*.log")) if folder and folder.is_dir() else []

    def stop(self, timeout_s: float = 30.0) -> list[str]:
        """Shut down Serve (and Ray, when `start` started it); safe to call twice.

        Returns:
            list[str]: what outlived the shutdown (processes killed after `timeout_s`, or
            a port still open); empty when it was clean.
        """
        if self.leftovers is not None:
            return self.leftovers
        import psutil
        import ray

        procs = _ray_processes() if self._started_ray else []
        with contextlib.suppress(Exception):
            _shutdown_serve(timeout_s)
        if self._started_ray:
            ray.shutdown()
        _, alive = psutil.wait_procs(procs, timeout=timeout_s)
        leftovers = []
        for p in alive:
            with contextlib.suppress(psutil.Error):
                leftovers.append(f"process {p.pid} {p.name()}")
                p.kill()
        deadline = time.monotonic() + 10
        while _port_open(self.host, self.port) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _port_open(self.host, self.port):
            leftovers.append(f"port {self.host}:{self.port} still open")
        self.leftovers = leftovers
        if self in _RUNNING:
            _RUNNING.remove(self)
        return leftovers


def _shutdown_serve(timeout_s: float) -> None:
    """`serve.shutdown()` without the warning Ray prints on every one of them ("(raylet) Task
    ServeController.graceful_shutdown failed. There are infinite retries remaining..."):
    the controller exits while the driver's call to it is in flight, as Serve intends, but
    that call inherits the controller's infinite task retries, and the driver reports each
    retry. The same call without retries ends in the RayActorError Serve expects; a
    controller that does not exit in time is left to `serve.shutdown()` as before."""
    import ray
    from ray import serve

    with contextlib.suppress(ValueError, ray.exceptions.RayActorError, TimeoutError):
        ray.get(_controller().graceful_shutdown.options(max_task_retries=0).remote(),
                timeout=timeout_s)
    with _quiet_serve():  # then it only clears this process's state, at INFO
        serve.shutdown()


def _controller():
    """Serve's controller actor (ValueError when Serve is not running)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    return ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)


@contextlib.contextmanager
def _quiet_serve():
    """Serve's driver-side INFO lines ("Connecting to existing Serve app...") on every
    deploy are noise in a notebook; warnings still show."""
    import logging

    logger = logging.getLogger("ray.serve")
    old = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


def _versioned(deployment, options: dict):
    """The deployment with a code version fixed for this server's lifetime. Serve gives
    every `serve.run` a random one otherwise, which restarts all replicas (reloading the
    models) even when only batching or the replica count changed; with a fixed version
    those are applied to the running replicas (`reconfigure`) or by adding/removing some."""
    opts = {k: v for k, v in options.items() if k != "_code_version"}
    return deployment.options(version=options["_code_version"], _internal=True, **opts)


def _ray_processes() -> list:
    """Every process of the local Ray instance: its daemons and all their children."""
    import psutil
    import ray

    node = ray._private.worker._global_node
    if node is None:
        return []
    out = {}
    for infos in node.all_processes.values():
        for info in infos:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(info.process.pid)
                out[p.pid] = p
                for c in p.children(recursive=True):
                    out[c.pid] = c
    return list(out.values())


def _why_failed(app_name: str) -> str:
    """Why Serve gave up deploying: the replica's own error, the last line of the traceback
    Serve keeps in the deployment's status (its own messages name no cause)."""
    from ray import serve

    status = serve.status().applications.get(app_name)
    messages = [d.message for d in (status.deployments.values() if status else []) if d.message]
    lines = [ln.strip() for m in messages for ln in re.sub(r"\x1b\[[0-9;]*m", "", m).splitlines()
             if ln.strip()]
    cause = lines[-1].rstrip(".") if lines else (status.message if status else "no status")
    return (f"the model server failed to start: {cause}. Each model loads in the replica; "
            "build its spec here to see the whole traceback (ModelSpec(...).build()): a "
            "corrupt or truncated file, a missing tokenizer or a pipeline's load() failing")


def _wait_running(app_name: str, timeout_s: float) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app_name)
        if status is not None and str(status.status).endswith("RUNNING"):
            return
        if status is not None and str(status.status).endswith("DEPLOY_FAILED"):
            raise ServeError(_why_failed(app_name))
        time.sleep(0.25)
    raise ServeError(f"application {app_name} not running after {timeout_s:.0f} s")


def _lean_params(base):
    """RayParams without the autoscaler monitor and the log monitor: a one-machine Serve
    instance has no nodes to add, and its logs go to files, not to the driver."""

    class Lean(base):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("no_monitor", True)
            kwargs.setdefault("include_log_monitor", False)
            for key in _AGENT_PORTS.values():  # chosen now, announced early (below)
                if not kwargs.get(key):
                    kwargs[key] = free_port()
            super().__init__(*args, **kwargs)

    return Lean


# The port files the raylet waits for (name -> RayParams field).
_AGENT_PORTS = {"metrics_agent_port": "metrics_agent_port",
                "metrics_export_port": "metrics_export_port",
                "dashboard_agent_listen_port": "dashboard_agent_listen_port",
                "runtime_env_agent_port": "runtime_env_agent_port"}


def _announcing_raylet(start_raylet):
    """Node.start_raylet that first writes the agents' (pinned) ports where the raylet
    looks for them, so it need not wait for the agents to write them after importing."""
    from ray._raylet import persist_port

    def start(node, *args, **kwargs):
        for name, key in _AGENT_PORTS.items():
            persist_port(node._session_dir, node._node_id, name,
                         int(getattr(node._ray_params, key)))
        return start_raylet(node, *args, **kwargs)

    return start


def _no_api_server(node, *, include_dashboard, raise_on_failure):
    node._webui_url = None  # what Ray records when its API server fails to start


@contextlib.contextmanager
def _lean_start():
    """Start a local Ray instance that survives a busy machine: three Python daemons fewer,
    and the agents' ports chosen up front and announced before the raylet starts.

    Why: Ray's raylet gives up, and the whole start fails, when its agents take more than
    15 s to report their ports (ray-project/ray#65983); on a busy 2-core laptop their
    imports alone take longer. With the ports known, the raylet connects when they are up.
    Without the dashboard, Ray's API server only runs its usage-statistics module, which
    also asks cloud metadata services (169.254.169.254, metadata.google.internal) where it
    runs, even with usage statistics off: skipping it keeps the start offline as well.
    Serve needs none of the three. The patches apply only while this block runs.
    """
    import ray._private.node as ray_node
    import ray._private.parameter as ray_parameter

    node = ray_node.Node
    params, api, raylet = ray_parameter.RayParams, node.start_api_server, node.start_raylet
    ray_parameter.RayParams = _lean_params(params)
    node.start_api_server, node.start_raylet = _no_api_server, _announcing_raylet(raylet)
    try:
        yield
    finally:
        ray_parameter.RayParams = params
        node.start_api_server, node.start_raylet = api, raylet


@contextlib.contextmanager
def _environ(wanted: dict[str, str]):
    """These variables for the Ray processes started in this block (they inherit the
    environment), except those the user has set; gone again after it."""
    before = {k: os.environ.get(k) for k in wanted}
    for k, v in wanted.items():
        os.environ.setdefault(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)


def _throughput_optimized():
    """Serve's throughput mode for the Ray processes started in this block: user code on
    the replica's own event loop, no router thread, log lines buffered, and direct ingress
    (each replica also serves HTTP itself, see `Server.replica_urls`). On two cores the
    default path's extra threads and hops cost more CPU than the model. Set
    RAY_SERVE_THROUGHPUT_OPTIMIZED=0 to keep Serve's defaults. Two of its settings are
    changed back: log lines are written at once (the monitoring chapter reads them live;
    with access logs off there are few), and a stopping replica drains for 1 s, not 30
    (meant for an external load balancer to notice; here there is none)."""
    return _environ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                     "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
                     "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"})


def _init_ray(address: str | None) -> bool:
    """Start (or join) Ray; True when this call started it.

    A fresh local instance starts lean (see `_lean_start`) and gets two more tries when it
    fails to start all the same.
    """
    import psutil
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline first: no telemetry
    kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address is not None:
        ray.init(address=address, **kwargs)
        return True
    for attempt in (1, 2, 3):
        before = {p.pid for p in psutil.Process().children(recursive=True)}
        try:  # a fresh one-machine instance on loopback, never someone else's
            # and Serve's request timeout answered as 504, not 408 (see `gateway`)
            with _lean_start(), _throughput_optimized(), _environ({ENV: CALLBACK}):
                ray.init(address="local", _node_ip_address="127.0.0.1", **kwargs)
            return True
        except Exception:
            with contextlib.suppress(Exception):
                ray.shutdown()
            # A node that failed half-way leaves its daemons (GCS, API server) running,
            # children of this process that ray.shutdown() does not know about.
            spawned = [p for p in psutil.Process().children(recursive=True)
                       if p.pid not in before]
            for p in spawned:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            psutil.wait_procs(spawned, timeout=10)
            if attempt == 3:
                raise
    return True  # pragma: no cover


def start(models: ModelSpec | Sequence[ModelSpec], *, host: str = "127.0.0.1",
          port: int | None = None, num_replicas: int = 1, autoscaling: dict | None = None,
          replica_cpus: float | None = None, threads: int | None = None, workers: int = 1,
          max_batch_size: int | None = None, batch_wait_timeout_s: float | None = None,
          max_body_bytes: int = 1 << 20, max_text_chars: int = 10_000,
          request_timeout_s: float | None = 20.0, app_name: str = "deploylab",
          ray_address: str | None = None,
          json_logs: bool = True, access_log: bool = False, log_level: str = "WARNING",
          timeout_s: float = 300.0) -> Server:
    """Serve models over the Open Inference Protocol on Ray Serve.

    Args:
        models (ModelSpec | Sequence[ModelSpec]): what to serve; several versions of one
            name are allowed (a request without a version gets the highest).
        host (str, default "127.0.0.1"): where the HTTP proxy listens (loopback only
            unless you say otherwise).
        port (int | None, default None): HTTP port; None picks a free one.
        num_replicas (int, default 1): replicas of the server (each holds every model).
        autoscaling (dict | None, default None): Serve's autoscaling_config instead of a
            fixed count, e.g. {"min_replicas": 1, "max_replicas": 2,
            "target_ongoing_requests": 8}.
        replica_cpus (float | None, default None): CPUs Ray reserves per replica; None
            shares this machine's cores among the (most) replicas.
        threads (int | None, default None): compute threads per model call (ONNX Runtime,
            torch, OpenMP), at least 1; None is cores / (replicas x workers).
        workers (int, default 1): batches of one model a replica runs at once, each on
            its own thread, all sharing one copy of the weights (Triton's instance count,
            OpenVINO's streams). On a small model `workers=cores, threads=1` beats one call
            on every core; replicas do the same with a copy of the model each. ONNX
            Runtime sessions and torch modules only: a `Pipeline` need not be thread-safe.
        max_batch_size (int | None, default None): overrides every spec's.
        batch_wait_timeout_s (float | None, default None): overrides every spec's.
        max_body_bytes (int, default 1 MiB): larger request bodies get 413.
        max_text_chars (int, default 10000): longer texts get 400 before tokenizing.
        request_timeout_s (float | None, default 20): the server (the proxy, and each
            replica's own endpoint) answers 504 to a request it has not answered by then
            (Serve's 408, rewritten by `gateway`: on a cluster of your own, see there; a
            client may retry either); under the kit's clients' 30 s, so they hear it. This
            bounds a rare hang: when a replica dies, Serve's router retries the requests it
            had sent there on another replica, and now and then such a retry never
            completes. Raise it for models slower than that under load; None waits as long
            as it takes.
        app_name (str, default "deploylab"): the Serve application's name.
        ray_address (str | None, default None): a Ray cluster ("auto", "ray://host:10001");
            None starts a private one on this machine.
        json_logs (bool, default True): replicas log JSON lines (Serve's LoggingConfig).
        access_log (bool, default False): one log line per request (costs throughput).
        log_level (str, default "WARNING"): replica log level.
        timeout_s (float, default 300): how long to wait for the server to be ready.

    Returns:
        Server: running; `stop()` it or use it in a `with` block.

    Raises:
        ServeError: a bad option, a port in use, or a replica that failed to start (with
            the replica's own error, e.g. a corrupt .onnx file); nothing is left running.
    """
    specs = [models] if isinstance(models, ModelSpec) else list(models)
    if not specs or not all(isinstance(s, ModelSpec) for s in specs):
        raise ServeError("start() needs one or more ModelSpec")
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ServeError(f"model versions repeat: {keys}")
    overrides = {k: v for k, v in (("max_batch_size", max_batch_size),
                                   ("batch_wait_timeout_s", batch_wait_timeout_s))
                 if v is not None}
    specs = [dataclasses.replace(s, **overrides) for s in specs] if overrides else specs
    most = int((autoscaling or {}).get("max_replicas", num_replicas))
    if most < 1:
        raise ServeError(f"num_replicas must be >= 1, got {most}")
    if request_timeout_s is not None and not request_timeout_s > 0:
        raise ServeError(f"request_timeout_s must be > 0 or None, got {request_timeout_s!r}")
    counts = {"workers": workers, "max_body_bytes": max_body_bytes,
              "max_text_chars": max_text_chars,
              **({"threads": threads} if threads is not None else {})}
    try:
        for name, value in counts.items():
            check_count(name, value)
    except ValueError as e:
        raise ServeError(str(e)) from None
    if replica_cpus is not None and not replica_cpus > 0:
        raise ServeError(f"replica_cpus must be > 0 or None, got {replica_cpus!r}")
    if workers > 1 and any(s.platform == "python" for s in specs):
        raise ServeError("workers > 1 runs batches of a model at once on threads, and a "
                         "Pipeline need not be thread-safe: serve pipelines with "
                         "num_replicas instead")
    cores = os.cpu_count() or 1
    threads = threads or max(1, cores // (most * workers))
    port = port or free_port(host)
    if _port_open(host, port):
        raise ServeError(f"{host}:{port} is in use; pick another port (or None for a free one)")
    started = _init_ray(ray_address)
    try:
        return _deploy(specs, host, port, most, autoscaling, num_replicas,
                       replica_cpus or min(1.0, cores / most), threads,
                       {"threads": threads, "workers": workers,
                        "max_body_bytes": int(max_body_bytes),
                        "max_text_chars": int(max_text_chars)},
                       app_name, started, json_logs, access_log, log_level, timeout_s,
                       request_timeout_s)
    except BaseException:
        with contextlib.suppress(Exception):
            _shutdown_serve(timeout_s)
        if started:
            import ray

            ray.shutdown()
        raise


def _deploy(specs, host, port, most, autoscaling, num_replicas, cpus, threads, settings,
            app_name, started, json_logs, access_log, log_level, timeout_s,
            request_timeout_s) -> Server:
    import ray
    from ray import serve
    from ray.serve.config import HTTPOptions

    from .app import ModelServer
    from .metrics import MetricsStore

    logging_config = {"encoding": "JSON" if json_logs else "TEXT", "log_level": log_level,
                      "enable_access_log": access_log}
    with _quiet_serve():
        serve.start(http_options=HTTPOptions(host=host, port=port,
                                             request_timeout_s=request_timeout_s),
                    logging_config=logging_config)
    store = ray.remote(num_cpus=0)(MetricsStore).options(
        name=f"{app_name}-metrics", namespace="serve", get_if_exists=True).remote()
    env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    # in the deployment's own options, so that `configure` (which runs the application again,
    # and Serve then falls back to its default: text, INFO, an access line per request)
    # keeps them
    options = {"logging_config": logging_config,
               "ray_actor_options": {"num_cpus": cpus,
                                     "runtime_env": {"env_vars": {
                                         **env, "TOKENIZERS_PARALLELISM": "false"}}},
               "max_ongoing_requests": max(64, 4 * max(s.max_batch_size for s in specs)),
               "health_check_period_s": 2, "health_check_timeout_s": 30,
               "graceful_shutdown_timeout_s": 2, "user_config": {}}
    if autoscaling:
        options["autoscaling_config"] = dict(autoscaling)
    else:
        options["num_replicas"] = int(num_replicas)
    options["_code_version"] = f"deploylab-{os.getpid()}-{time.time_ns()}"
    args = (specs, settings, store)
    app = _versioned(ModelServer, options).bind(*args)
    try:
        with _quiet_serve():
            serve.run(app, name=app_name, route_prefix="/", blocking=False,
                      logging_config=logging_config)
    except RuntimeError:  # Serve's "failed to update the deployments", with no cause
        raise ServeError(_why_failed(app_name)) from None
    _wait_running(app_name, timeout_s)
    server = Server(f"http://{host}:{port}", host, port, specs, app_name, started,
                    ModelServer, args, options)
    server.client(timeout_s=timeout_s).wait_ready(timeout_s)
    _RUNNING.append(server)
    return server


def stop() -> list[str]:
    """Stop the most recently started server that is still running.

    Returns:
        list[str]: its leftovers (see `Server.stop`); empty if none was running.
    """
    return _RUNNING[-1].stop() if _RUNNING else []
