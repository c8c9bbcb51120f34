"""The model server assembled: store, model pool, inference layer, metrics, gRPC and REST, health.

Both front doors run on one asyncio loop (the caller's: uvloop in `python -m serving`); model calls run
on the model pool's threads; loading, polling and the config watcher on threads of their own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from serving.batching import leave_a_core_to_the_loop
from serving.config_files import ConfigError, check_model_config, map_base_paths, read_model_config
from serving.errors import ServingError, invalid_argument
from serving.grpc_api import build_grpc_server
from serving.inference import Inference
from serving.metrics import ServingMetrics
from serving.model_pool import ModelPool
from serving.rest import RestApp
from serving.rest_server import RestServer
from serving.settings import Settings
from serving.store import AVAILABLE, ModelEntry, ModelStore, VersionRecord

log = logging.getLogger("serving")

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
# TF Serving registers its two services by their short names, and "" for the server as a whole.
HEALTH_SERVICES = ("", "ModelService", "PredictionService")
STOP_GRACE_S = 5.0  # how long a stop lets requests in flight finish


class ModelServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ServingMetrics(serves=lambda name: self.store.serves(name))
        self.health = health.aio.HealthServicer() if settings.enable_grpc_healthcheck_service else None
        self._loop: asyncio.AbstractEventLoop | None = None  # set by serve
        self._stop = threading.Event()
        self.draining = False  # the lame-duck period before a stop (see serve)
        self._started = False  # every model of the first config has been AVAILABLE (see _update_health)
        self._in_force = settings.models  # the config last adopted, from the file or a reload call
        self._adopting = threading.Lock()
        self._changed: asyncio.Future[None] | None = None  # done at the next change of versions' states
        started_with = map_base_paths(settings.models, settings.base_path_map).model_config_list.config
        self._allowed_roots = (*(m.base_path for m in started_with), *settings.allowed_base_path_roots)
        cores = os.cpu_count() or 1
        threads = max(cores, settings.batching.num_batch_threads if settings.batching else 0)
        self.pool = ModelPool(threads, settings.limits.queued_calls)
        batching = settings.batching and leave_a_core_to_the_loop(settings.batching, cores)
        try:
            self.store = ModelStore(
                map_base_paths(settings.models, settings.base_path_map),
                self.pool,
                warm_up_iterations=settings.warmup_iterations,
                batching=batching,
                tflite=settings.tflite,
                on_load=self.metrics.observe_load,
                on_warmup=self.metrics.observe_warmup,
                on_change=self._state_changed,
                on_batch=self.metrics.observe_batch,
                allow_unavailable_labels=settings.allow_version_labels_for_unavailable_models,
                load_retries=settings.max_num_load_retries,
                load_retry_interval_s=settings.load_retry_interval_s,
            )
        except ServingError as err:  # TF Serving refuses to start on such a config, too
            raise ConfigError(
                f"{err.message}: no version is loaded before the server starts; give "
                "--allow_version_labels_for_unavailable_models to assign labels in the first config"
            ) from None
        self.inference = Inference(
            self.store,
            settings.limits,
            self.metrics.observe_request,
            self.metrics.observe_runtime,
            packed_outputs=settings.enable_serialization_as_tensor_content,
        )

    async def reload_config(self, config: Any) -> None:
        """ModelService.HandleReloadConfigRequest: adopt a new ModelServerConfig, load what it names,
        and answer once every model it adds has a version AVAILABLE, as TF Serving answers
        (server_core.cc:440-441, with no time limit: the caller's deadline is the limit). A model
        whose first version to settle failed instead makes the call UNKNOWN, naming it and its error.

        Anyone who reaches the gRPC port can call it, so its base paths must lie under a root the
        operator allowed: a base path of the config the server started with, or one given with
        --allowed_base_path_roots. The watched config file, when there is one, wins again at its next
        poll, as TF Serving re-applies it at every poll."""
        if config.WhichOneof("config") != "model_config_list":  # model_service_impl.cc:51-69
            raise invalid_argument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        try:
            check_model_config(config, self._in_force)
        except ConfigError as err:
            raise invalid_argument(str(err)) from None
        mapped = map_base_paths(config, self.settings.base_path_map)
        for model in mapped.model_config_list.config:
            if not any(_lies_under(model.base_path, root) for root in self._allowed_roots):
                raise ServingError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"model {model.name}: its base path lies outside the roots this server may serve from; "
                    "start the server with --allowed_base_path_roots to allow it",
                )
        added = await asyncio.to_thread(self._adopt, config)
        # Ours: a later config (another call, the watched file's next poll) may take a model out while
        # this call waits for it; TF Serving's config lock makes the later one wait instead.
        while any(entry.first_outcome is None and self.store.holds(entry) for entry in added):
            if self._changed is None or self._changed.done():
                self._changed = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._changed)  # shielded: one caller giving up leaves the others waiting
        failed = [
            (entry.name, entry.first_outcome)
            for entry in sorted(added, key=lambda entry: entry.name)
            if entry.first_outcome is None or entry.first_outcome.state != AVAILABLE
        ]
        if failed:
            raise ServingError(grpc.StatusCode.UNKNOWN, _unavailable_models(failed))

    def _adopt(self, config: Any) -> list[ModelEntry]:
        with self._adopting:  # a reload call and the file's watcher, one at a time
            mapped = map_base_paths(config, self.settings.base_path_map)
            added = self.store.reload(mapped, self.settings.allow_version_labels_for_unavailable_models)
            self._in_force = config
        self.store.poll_soon()
        self._state_changed()  # a model that never loaded may have left the config
        return added

    def _watch_model_config_file(self) -> None:
        """--model_config_file_poll_wait_seconds: adopt the file whenever it differs from the config in
        force. As in TF Serving, a refused config (a label on a version still loading, say) is tried
        again at every poll, so it takes effect once it can; a file that does not parse is logged and
        the last good config stays. Each distinct error is logged once."""
        path, every_s = self.settings.model_config_file, self.settings.model_config_file_poll_wait_seconds
        if path is None:  # started with --model_name and --model_base_path: no file to watch
            return
        last_error = ""
        while not self._stop.wait(every_s):
            try:
                config = read_model_config(path)
                if config == self._in_force:  # unchanged, and no reload call has changed what serves
                    continue
                self._adopt(config)
            except (ConfigError, ServingError) as err:
                message = err.message if isinstance(err, ServingError) else str(err)
                if message != last_error:
                    log.error("%s: %s; keeping the previous config", path, message)
                last_error = message
                continue
            except Exception:  # a watcher that died would miss every later change, silently
                log.exception("%s: adopting it failed; keeping the previous config", path)
                continue
            last_error = ""
            log.warning("adopted the changed %s", path)

    def _state_changed(self) -> None:
        """From any thread: a version started or stopped answering, or failed for good."""
        self._update_health()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_reloads)

    def _wake_reloads(self) -> None:
        """On the loop: wake the reload calls waiting for their new models to settle."""
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def _update_health(self) -> None:
        """From any thread: publish SERVING or NOT_SERVING on the loop, as things stand when it runs.

        TF Serving opens its ports once every model of its first config is AVAILABLE, sets SERVING then
        and never changes it; so does this server, whose ports may answer before then (a model with no
        version yet): NOT_SERVING until every model of the config in force has been AVAILABLE, SERVING
        from then on, whatever versions come and go. Ours alone: NOT_SERVING again in the lame-duck
        period before a stop (gRPC's own shutdown says so too)."""
        health_servicer, loop = self.health, self._loop
        if health_servicer is None or loop is None or loop.is_closed():  # closed: the server has stopped
            return
        self._started = self._started or self.store.all_available()

        async def publish() -> None:
            serving = self._started and not self.draining
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if serving
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            for service in HEALTH_SERVICES:
                await health_servicer.set(service, status)

        asyncio.run_coroutine_threadsafe(publish(), loop)

    async def serve(self, stop: asyncio.Event) -> None:
        """Listen on both ports (OSError if one is taken), serve until `stop` is set, then stop.

        With a lame-duck period (SERVING_LAME_DUCK_SECONDS), the stop first says "going away" while
        still answering predictions: gRPC health NOT_SERVING and REST model status 503. A balancer's
        health check then takes this replica out of rotation before it stops accepting, so no call sent
        its way fails (a gRPC call that reaches a stopping server is CANCELLED)."""
        settings = self.settings
        self._loop = loop = asyncio.get_running_loop()
        grpc_addresses = [f"{settings.host}:{settings.port}"] if settings.port else []
        if settings.grpc_socket_path:
            grpc_addresses.append(f"unix:{settings.grpc_socket_path}")
        grpc_server = build_grpc_server(
            grpc_addresses,
            self.inference,
            self.reload_config,
            self.health,
            settings.grpc_channel_arguments,
        )
        rest = None
        if settings.rest_api_port:
            prometheus = settings.monitoring.prometheus_config
            app = RestApp(
                self.inference,
                self.inference.request_bytes,
                settings.rest_api_timeout_s,
                metrics=self.metrics.exposition if prometheus.enable else None,
                metrics_path=prometheus.path or DEFAULT_METRICS_PATH,
                draining=lambda: self.draining,
                cors=settings.rest_api_enable_cors_support,
            )
            rest = RestServer(
                settings.host,
                settings.rest_api_port,
                app,
                settings.rest_api_timeout_s,
                STOP_GRACE_S,
                settings.limits,
            )
        self._update_health()
        # Both ports are bound, and connections wait in their backlogs, until the versions found at start
        # have had their first load: TF Serving answers only once its first models are AVAILABLE, and a
        # replica a balancer added as it started answered NOT_FOUND before its first health check.
        # A model with no version yet does not hold them (`make up` trains its first).
        first_poll = asyncio.Event()
        self.store.start_polling(
            settings.file_system_poll_wait_seconds, lambda: loop.call_soon_threadsafe(first_poll.set)
        )
        rest_serving = None
        if await _first_set(first_poll, stop) is first_poll:
            await grpc_server.start()
            log.warning("gRPC API at %s", " and ".join(grpc_addresses))
            if rest is not None:
                rest_serving = rest.start()
                log.warning("REST API at http://%s:%d", settings.host, settings.rest_api_port)
        if settings.model_config_file and settings.model_config_file_poll_wait_seconds > 0:
            threading.Thread(target=self._watch_model_config_file, name="config-watcher", daemon=True).start()

        await stop.wait()
        if settings.lame_duck_s > 0:
            self.draining = True
            self._update_health()
            log.warning("stopping in %gs; until then answering, reported as going away", settings.lame_duck_s)
            await asyncio.sleep(settings.lame_duck_s)  # the balancer's checks see it meanwhile
        self._stop.set()
        stopping = [grpc_server.stop(STOP_GRACE_S)]  # both doors drain at the same time
        if rest is not None and rest_serving is not None:
            stopping.append(rest.stop(rest_serving))
        await asyncio.gather(*stopping)
        await asyncio.to_thread(self.store.wait_idle, STOP_GRACE_S)
        self.store.stop()
        self.pool.shutdown()
        self.inference.parsing.close()


async def _first_set(*events: asyncio.Event) -> asyncio.Event:
    """The first of `events` to be set (waiting for it), the others' waits cancelled."""
    waits = {asyncio.ensure_future(event.wait()): event for event in events}
    done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in pending:
        wait.cancel()
    return waits[done.pop()]


def _lies_under(path: str, root: str) -> bool:
    """Whether `path` is `root` or inside it, as the file system resolves both (`..`, repeated slashes
    and symbolic links followed), so a link under a root cannot lead out of it."""
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _unavailable_models(failed: list[tuple[str, VersionRecord | None]]) -> str:
    """TF Serving's words for a reload whose new models did not all become available
    (server_core.cc:336-360): each model's first version to settle, `{name: N version: V}` as
    ServableId::DebugString writes it, and its error as absl::Status::ToString writes it. A model a
    later config removed before any version settled is ours alone to report."""

    def described(name: str, record: VersionRecord | None) -> str:
        if record is None:
            return f"{{{{name: {name}}} removed by a later config before any version settled}}, "
        error = record.error_code != grpc.StatusCode.OK
        why = f" due to error: {record.error_code.name}: {record.error_message}" if error else ""
        return f"{{{{name: {name} version: {record.version}}}{why}}}, "

    listed = "".join(described(name, record) for name, record in failed)
    return f"{len(failed)} model(s) did not become available: {{{listed}}}"
