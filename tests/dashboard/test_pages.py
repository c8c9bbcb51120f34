"""Each dashboard page run by Streamlit's AppTest against a real server, model and artefacts."""

from __future__ import annotations

import base64
import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from tests.client.conftest import encode, photo_of
from tests.conftest import ROOT, ServerProcess, free_port, start_server
from trainer.data import Split
from trainer.progress import RunProgress

VIEWS = ROOT / "dashboard" / "views"
SAMPLES = sorted((ROOT / "dashboard" / "samples").glob("*-*.*"))


def page(name: str) -> AppTest:
    return AppTest.from_file(str(VIEWS / f"{name}.py"), default_timeout=60)


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, trained_model_dir: Path, server: ServerProcess) -> Path:
    monkeypatch.setenv("MODEL_DIR", str(trained_model_dir))
    monkeypatch.setenv("SERVING_GRPC", server.grpc_target)
    return trained_model_dir


def chart_specs(app: AppTest) -> list[dict[str, Any]]:
    """Each chart's Vega-Lite spec, as the browser gets it."""
    return [json.loads(chart.proto.spec) for chart in app.get("vega_lite_chart")]


def chart_y(spec: dict[str, Any]) -> dict[str, Any]:
    """The y encoding of a chart, or of its first layer."""
    return (spec["layer"][0] if "layer" in spec else spec)["encoding"]["y"]


def texts(app: AppTest) -> str:
    parts = [
        e.value
        for kind in ("markdown", "caption", "info", "warning", "error", "success", "subheader")
        for e in getattr(app, kind)
    ]
    return "\n".join(str(p) for p in parts)


def test_training_page_draws_each_metric_and_a_live_run(
    dashboard_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "models"
    shutil.copytree(dashboard_env, model_dir)
    run = RunProgress(model_dir / "mnist", "20261125T000000Z-1", "plus", planned_epochs=5)
    run.epoch_done(
        2,
        {
            "loss": [0.5, 0.2],
            "accuracy": [0.8, 0.9],
            "recall": [0.7, 0.85],
            "val_loss": [0.3, 0.2],
            "val_accuracy": [0.9, 0.95],
            "val_recall": [0.88, 0.93],
        },
    )
    killed = RunProgress(model_dir / "mnist", "20261124T000000Z-9", "plus", planned_epochs=5)
    killed.epoch_done(1, {"loss": [0.5]})
    killed.record["updated_at"] = "2026-11-24T00:10:00+00:00"  # a trainer SIGKILLed long ago
    killed.path.write_text(json.dumps(killed.record))
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    app = page("training").run()
    assert not app.exception
    assert "Run 20261125T000000Z-1 (plus): epoch 2 of up to 5" in texts(app)
    assert "Run 20261124T000000Z-9 (plus) stopped reporting at epoch 1" in texts(app)
    assert "Run 20261124T000000Z-9 (plus): epoch" not in texts(app)
    assert app.multiselect[0].value == [1]
    # Loss, accuracy and recall: live for the running run, then for version 1.
    assert [chart_y(spec)["title"] for spec in chart_specs(app)] == ["loss", "accuracy", "recall"] * 2


def test_training_page_tells_of_a_failed_run_and_survives_odd_records(
    dashboard_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that failed says why (it used to read "No training run in progress"); a record with a
    time without its offset, or a history of another shape, is a warning, not a traceback."""
    model_dir = tmp_path / "models"
    shutil.copytree(dashboard_env, model_dir)
    failed = RunProgress(model_dir / "mnist", "20261126T000000Z-3", "plus", planned_epochs=5)
    failed.epoch_done(1, {"loss": [0.5]})
    failed.failed("ResourceExhaustedError: OOM when allocating a tensor")
    naive = RunProgress(model_dir / "mnist", "20261125T000000Z-2", "seed", planned_epochs=5)
    naive.record["updated_at"] = "2026-11-25T00:00:00"  # no offset: taken as UTC, and long silent
    naive.path.write_text(json.dumps(naive.record))
    history = model_dir / "mnist" / "1" / "assets.extra" / "history.json"
    history.write_text(json.dumps({"loss": "not a list"}))
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    app = page("training").run()
    assert not app.exception
    shown = texts(app)
    assert "Run 20261126T000000Z-3 (plus) failed at epoch 1" in shown and "OOM when allocating" in shown
    assert "Run 20261125T000000Z-2 (seed) stopped reporting" in shown
    assert "history.json is not as this dashboard reads it" in shown


def test_training_page_without_a_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    app = page("training").run()
    assert not app.exception and "No model version" in texts(app)


def test_evaluation_page_compares_with_the_original(dashboard_env: Path) -> None:
    app = page("evaluation").run()
    assert not app.exception
    labels = [m.label for m in app.metric]
    assert labels == ["Test accuracy", "Test recall", "Test loss"]
    assert "the original project reports 99.15% accuracy" in texts(app)
    assert len(app.get("image")) > 0  # the gallery of mistakes
    confusion, per_class = chart_specs(app)
    assert confusion["layer"][0]["encoding"]["x"]["field"] == "predicted"
    assert confusion["layer"][0]["encoding"]["y"]["field"] == "true"
    assert per_class["encoding"]["x"]["field"] == "digit" and per_class["mark"]["type"] == "bar"


def test_evaluation_page_says_what_it_cannot_compare_or_read(
    dashboard_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against a version without metrics: no deltas, and a warning (they used to be against the
    original project, captioned as against that version). Metrics of another shape: a warning. A
    source named in Markdown is shown as text, with no image fetched."""
    model_dir = tmp_path / "models"
    shutil.copytree(dashboard_env, model_dir)
    shutil.copytree(model_dir / "mnist" / "1", model_dir / "mnist" / "2")
    (model_dir / "mnist" / "1" / "assets.extra" / "metrics.json").unlink()
    extra = model_dir / "mnist" / "2" / "assets.extra"
    uploads = {
        "measured_on": "today",
        "sources": {"![x](http://example.com/x.png)": {"accuracy": 0.5, "images": 2}},
    }
    (extra / "uploads.json").write_text(json.dumps(uploads))
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    app = page("evaluation").run()
    app.selectbox[1].select("version 1").run()
    assert not app.exception
    assert "Version 1 has no readable assets.extra/metrics.json: no deltas against it." in texts(app)
    assert not any(metric.delta for metric in app.metric) and "Deltas against" not in texts(app)
    assert "![x]" not in "".join(str(e.value) for e in app.markdown)

    metrics = json.loads((extra / "metrics.json").read_text())
    del metrics["recall"]
    (extra / "metrics.json").write_text(json.dumps(metrics))
    app = page("evaluation").run()
    assert not app.exception and "metrics.json is not as this dashboard reads it (KeyError" in texts(app)


def test_models_page_reports_the_server(dashboard_env: Path) -> None:
    app = page("models").run()
    assert not app.exception
    assert "Requests without a version go to version 1" in texts(app)
    versions, *signature_frames = (frame.value for frame in app.dataframe)
    assert versions[["version", "state", "status"]].values.tolist() == [[1, "AVAILABLE", "OK"]]
    signatures = {frame["signature"].iloc[0]: frame.set_index("name") for frame in signature_frames}
    assert set(signatures) == {"serving_default", "classify"}
    assert set(signatures["serving_default"].index) == {"images", "probabilities", "classes"}
    assert signatures["serving_default"].loc["images", "dtype"] == "DT_FLOAT"


def test_models_page_shows_labels_from_the_model_config(
    dashboard_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "models.config"
    config.write_text(
        'model_config_list { config { name: "mnist" base_path: "/models/mnist" model_platform: "tensorflow"\n'
        '  version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 1 } } }\n'
    )
    monkeypatch.setenv("MODEL_CONFIG_FILE", str(config))
    app = page("models").run()
    assert not app.exception
    versions = app.dataframe[0].value
    assert versions.loc[versions.version == 1, "labels"].item() == "canary, stable"


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("127.0.0.1:{port}", "is not answering"),
        ("http://127.0.0.1:{port}", "SERVING_GRPC takes HOST:PORT such as localhost:8500, not a URL"),
        ("127.0.0.1", "SERVING_GRPC takes HOST:PORT such as localhost:8500, with the port"),
    ],
    ids=["down", "a-url", "no-port"],
)
def test_models_page_says_when_the_server_is_down_or_misnamed(
    monkeypatch: pytest.MonkeyPatch, dashboard_env: Path, target: str, said: str
) -> None:
    monkeypatch.setenv("SERVING_GRPC", target.format(port=free_port()))
    app = page("models").run()
    assert not app.exception and said in texts(app)


def test_models_page_says_a_silent_server_is_not_answering(
    monkeypatch: pytest.MonkeyPatch, dashboard_env: Path
) -> None:
    """A port that takes connections and never answers (a server loading its first versions, a stuck
    balancer): the call runs out of time, which is no answer, not "no version yet"."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        monkeypatch.setenv("SERVING_GRPC", f"127.0.0.1:{silent.getsockname()[1]}")
        app = page("models").run()
    assert not app.exception and "is not answering" in texts(app)


def test_predict_page_reads_uploads_and_reports_bad_ones(dashboard_env: Path, mnist_test: Split) -> None:
    app = page("predict").run()
    assert not app.exception and "Upload images, try a sample or draw a digit" in texts(app)
    app.file_uploader[0].set_value(
        [
            ("seven.jpg", encode(photo_of(mnist_test.images[0]), "JPEG"), "image/jpeg"),
            ("blank.png", encode(photo_of(mnist_test.images[0] * 0)), "image/png"),
        ]
    )
    app.run()
    assert not app.exception
    assert "blank.png: no ink found" in texts(app)
    (digit,) = app.metric
    assert digit.label == "Digit" and digit.value == "7"
    assert "version 1" in texts(app)


def test_predict_offers_the_versions_served_and_says_plainly_what_is_not(
    dashboard_env: Path, mnist_test: Split
) -> None:
    """A version is picked from those the server answers from; a label the server does not know is
    said in the page's words, with the versions it does serve."""
    app = page("predict").run()
    app.selectbox[0].set_value("a version number").run()
    assert app.selectbox[1].label == "Version served" and app.selectbox[1].options == ["1"]
    app.selectbox[0].set_value("a label").run()
    app.text_input[0].input("nope").run()
    app.file_uploader[0].set_value(
        [("seven.jpg", encode(photo_of(mnist_test.images[0]), "JPEG"), "image/jpeg")]
    )
    app.run()
    assert not app.exception
    assert "The server gives no version the label 'nope' (served now: 1)." in texts(app)


def test_more_uploads_than_the_server_batches_go_in_several_requests(
    monkeypatch: pytest.MonkeyPatch, trained_model_dir: Path, mnist_test: Split
) -> None:
    """The stack's server takes at most 64 images a request (batching.config): 70 uploads are two
    requests, every one answered (one request of 70 was refused whole). The first 24 answers are drawn
    a row each, the other 46 listed in one table (a browser took seconds over 200 charts)."""
    batching = ROOT / "serving" / "config" / "batching.config"
    server = start_server(
        "--model_name=mnist",
        f"--model_base_path={trained_model_dir / 'mnist'}",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
    )
    try:
        monkeypatch.setenv("MODEL_DIR", str(trained_model_dir))
        monkeypatch.setenv("SERVING_GRPC", server.grpc_target)
        app = page("predict").run()
        uploads = [(f"{i}.png", encode(photo_of(mnist_test.images[i])), "image/png") for i in range(70)]
        app.file_uploader[0].set_value(uploads)
        app.run()
        assert not app.exception and not app.error, [e.value for e in app.error]
        drawn = [m.value for m in app.metric]
        assert len(drawn) == 24  # in upload order: the quick model reads nearly all of them right
        assert sum(d == str(label) for d, label in zip(drawn, mnist_test.labels, strict=False)) >= 20
        (table,) = app.dataframe
        assert list(table.value["image"]) == [f"{i}.png" for i in range(24, 70)]
        assert "The other 46 answers, in a table" in texts(app)
        requests = [c.value for c in app.caption if "in one request" in c.value]
        assert (
            len(requests) == 2
            and requests[0].startswith("64 image(s)")
            and requests[1].startswith("6 image(s)")
        )
    finally:
        assert server.stop() == 0


def test_every_sample_digit_is_one_click_from_an_answer(dashboard_env: Path) -> None:
    app = page("predict").run()
    (samples,) = app.pills
    assert len(samples.options) == len(SAMPLES) >= 4
    for sample in SAMPLES:
        app.pills[0].set_value(sample).run()
        assert not app.exception and not app.error, sample.name
        (digit,) = app.metric
        kind, shown = sample.stem.split("-")[:2]
        if kind == "mnist":  # MNIST's own test digits: what even the suite's small model reads right
            assert digit.value == shown, sample.name


def test_evaluation_page_adds_what_bench_uploads_measured(
    dashboard_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "models"
    shutil.copytree(dashboard_env, model_dir)
    monkeypatch.setenv("MODEL_DIR", str(model_dir))
    before = page("evaluation").run()
    assert "join this table once `make bench-uploads`" in texts(before)
    drawn = base64.b64encode(bytes(range(256)) * 3 + bytes(16)).decode()
    miss = {"file": "uci_9_3.png", "label": 9, "predicted": 3, "confidence": 0.9, "pixels": drawn}
    sources = {
        "typeset": {"images": 1170, "accuracy": 0.9974, "misses": []},
        "uci": {"images": 1797, "accuracy": 0.9544, "misses": [miss, {**miss, "label": 8}]},
    }
    uploads = {"measured_on": "2026-12-06", "sources": sources}
    (model_dir / "mnist" / "1" / "assets.extra" / "uploads.json").write_text(json.dumps(uploads))
    after = page("evaluation").run()
    assert not after.exception
    (table,) = [frame.value for frame in after.dataframe if "measured by" in frame.value.columns]
    assert table.loc["uci", "accuracy"] == "95.44%" and table.loc["typeset", "images"] == 1170
    assert "bench-uploads (2026-12-06)" in table.loc["uci", "measured by"]
    assert "uci: its most confident misses" in texts(after)
    assert len(after.get("image")) == len(before.get("image")) + 2
