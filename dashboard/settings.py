"""Where the dashboard looks: the model directory and the model server, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The original project's figures on the MNIST test set, the yardstick on the Evaluation page.
ORIGINAL = {"accuracy": 0.9915, "recall": 0.9911, "loss": 0.0262}


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    model_name: str
    grpc: str
    # The servers' Prometheus endpoint; its host name resolves to every replica (the monitor reads each).
    metrics_url: str
    model_config_file: Path | None  # the server's ModelServerConfig, for its version labels

    @property
    def base_path(self) -> Path:
        return self.model_dir / self.model_name


def settings() -> Settings:
    return Settings(
        model_dir=Path(os.environ.get("MODEL_DIR", "models")),
        model_name=os.environ.get("MODEL_NAME", "mnist"),
        grpc=os.environ.get("SERVING_GRPC", "localhost:8500"),
        metrics_url=os.environ.get("SERVING_METRICS", "http://localhost:8501/monitoring/prometheus/metrics"),
        model_config_file=Path(os.environ["MODEL_CONFIG_FILE"])
        if os.environ.get("MODEL_CONFIG_FILE")
        else None,
    )
