"""The model server assembled: store, inference layer, metrics, gRPC and REST front doors, health."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from grpc_health.v1 import health, health_pb2

from serving.errors import ServingError, invalid_argument
from serving.grpc_api import build_grpc_server
from serving.inference import Inference
from serving.metrics import ServingMetrics
from serving.rest import RestServer
from serving.settings import ConfigError, Settings, check_model_config, map_base_paths, read_model_config
from serving.store import ModelStore

log = logging.getLogger("serving")

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
# TF Serving registers its two services by their short names, and "" for the server as a whole.
HEALTH_SERVICES = ("", "ModelService", "PredictionService")


class ModelServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = ServingMetrics()
        self.health = health.HealthServicer() if settings.enable_grpc_healthcheck_service else None
        self._stop = threading.Event()
        self.draining = False  # the lame-duck period before a stop (see stop)
        try:
            self.store = ModelStore(
                map_base_paths(settings.models, settings.base_path_map),
                warm_up=settings.enable_model_warmup,
                batching=settings.batching,
                tflite=settings.tflite,
                on_load=self.metrics.observe_load,
                on_change=self._update_health,
                on_batch=self.metrics.observe_batch,
                allow_unavailable_labels=settings.allow_version_labels_for_unavailable_models,
            )
        except ServingError as err:  # TF Serving refuses to start on such a config, too
            raise ConfigError(
                f"{err.message}: no version is loaded before the server starts; give "
                "--allow_version_labels_for_unavailable_models to assign labels in the first config"
            ) from None
        self.inference = Inference(self.store, self.metrics.observe_request, self.metrics.observe_runtime)
        self._update_health()
        self.grpc = build_grpc_server(
            f"{settings.host}:{settings.port}",
            self.inference,
            self.reload_config,
            settings.grpc_max_threads,
            self.health,
        )
        self.rest: RestServer | None = None
        if settings.rest_api_port:
            prometheus = settings.monitoring.prometheus_config
            self.rest = RestServer(
                (settings.host, settings.rest_api_port),
                self.inference,
                settings.rest_api_timeout_s,
                metrics=self.metrics.exposition if prometheus.enable else None,
                metrics_path=prometheus.path or DEFAULT_METRICS_PATH,
                draining=lambda: self.draining,
            )

    def reload_config(self, config: Any) -> None:
        """ModelService.HandleReloadConfigRequest: adopt a new ModelServerConfig and load what it names."""
        try:
            check_model_config(config, "ReloadConfigRequest")
        except ConfigError as err:
            raise invalid_argument(str(err)) from None
        self._adopt(config)

    def _adopt(self, config: Any) -> None:
        mapped = map_base_paths(config, self.settings.base_path_map)
        self.store.reload(mapped, self.settings.allow_version_labels_for_unavailable_models)
        self.store.poll()

    def _watch_model_config_file(self) -> None:
        """--model_config_file_poll_wait_seconds: adopt the file whenever it differs from the config in
        force. As in TF Serving, a refused config (a label on a version still loading, say) is tried
        again at every poll, so it takes effect once it can; a file that does not parse is logged and
        the last good config stays. Each distinct error is logged once."""
        path, every_s = self.settings.model_config_file, self.settings.model_config_file_poll_wait_seconds
        if path is None:  # started with --model_name and --model_base_path: no file to watch
            return
        adopted, last_error = self.settings.models, ""
        while not self._stop.wait(every_s):
            try:
                config = read_model_config(path)
                if config == adopted:
                    continue
                self._adopt(config)
            except (ConfigError, ServingError) as err:
                message = err.message if isinstance(err, ServingError) else str(err)
                if message != last_error:
                    log.error("%s: %s; keeping the previous config", path, message)
                last_error = message
                continue
            adopted, last_error = config, ""
            log.warning("adopted the changed %s", path)

    def _update_health(self) -> None:
        if self.health is None:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.store.any_available() and not self.draining
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in HEALTH_SERVICES:
            self.health.set(service, status)

    def start(self) -> None:
        self.store.start_polling(self.settings.file_system_poll_wait_seconds)
        if self.settings.model_config_file and self.settings.model_config_file_poll_wait_seconds > 0:
            threading.Thread(target=self._watch_model_config_file, name="config-watcher", daemon=True).start()
        self.grpc.start()
        log.warning("gRPC API at %s:%d", self.settings.host, self.settings.port)
        if self.rest is not None:
            self.rest.serve_in_background()
            log.warning("REST API at http://%s:%d", self.settings.host, self.settings.rest_api_port)

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish (up to `grace_s`), then let go of everything.

        With a lame-duck period (SERVING_LAME_DUCK_SECONDS), first say "going away" while still answering
        predictions: gRPC health NOT_SERVING and REST model status 503. A balancer's health check then
        takes this replica out of rotation before it stops accepting, so no call sent its way fails (a
        gRPC call that reaches a stopping server is CANCELLED)."""
        if self.settings.lame_duck_s > 0:
            self.draining = True
            self._update_health()
            log.warning(
                "stopping in %gs; until then answering, reported as going away", self.settings.lame_duck_s
            )
            time.sleep(self.settings.lame_duck_s)  # the balancer's checks see it meanwhile
        self._stop.set()
        grpc_stopped = self.grpc.stop(grace_s)  # returns at once: both doors drain at the same time
        if self.rest is not None:
            self.rest.stop(grace_s)
        grpc_stopped.wait(grace_s)
        self.store.wait_idle(grace_s)
        self.store.stop()
