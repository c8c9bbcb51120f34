"""Test-set figures of a version against the original project's and another version's."""

import base64

import numpy as np
import pandas as pd
import streamlit as st

from contract import model_dir
from dashboard import artefacts, charts
from dashboard.settings import ORIGINAL, settings

config = settings()
st.title("Evaluation")
versions = artefacts.versions(config.base_path)
if not versions:
    st.info(f"No model version in {config.base_path} yet: train one with `make up` or `python -m trainer`.")
    st.stop()

left, right = st.columns(2)
version = left.selectbox("Version", versions, format_func=lambda v: f"version {v}")
others = ["the original project", *(f"version {v}" for v in versions if v != version)]
against = right.selectbox("Compare with", others)
metrics = artefacts.artefact(config.base_path, version, model_dir.METRICS)
if metrics is None:
    st.warning(f"Version {version} has no readable assets.extra/metrics.json.")
    st.stop()

baseline: dict | None = ORIGINAL
if against != "the original project":
    baseline = artefacts.artefact(config.base_path, int(against.split()[-1]), model_dir.METRICS)
    if baseline is None:
        st.warning(f"{against.capitalize()} has no readable assets.extra/metrics.json: no deltas against it.")
HELP = {
    "accuracy": "The share of MNIST's 10,000 test digits read right.",
    "recall": "Keras' Recall, as the original project reports it: the share of test digits whose true "
    "digit scored over 0.5. A model unsure of its answers scores low here even when it reads them right.",
    "loss": "Categorical cross-entropy on the test set: lower is better.",
}
with artefacts.read_as_expected(f"Version {version}'s metrics.json"):
    for column, name in zip(st.columns(3), ("accuracy", "recall", "loss"), strict=True):
        value = float(metrics[name])
        shown = f"{value:.2%}" if name != "loss" else f"{value:.4f}"
        delta_text = None
        if baseline is not None:
            delta = value - float(baseline[name])
            delta_text = f"{delta:+.2%}" if name != "loss" else f"{delta:+.4f}"
        column.metric(
            f"Test {name}",
            shown,
            delta_text,
            delta_color="inverse" if name == "loss" else "normal",
            help=HELP[name],
        )
    if baseline is not None:
        st.caption(
            f"Deltas against {against}; the original project reports 99.15% accuracy, 99.11% recall, "
            "0.0262 loss."
        )

    matrix, figures = st.columns(2)
    matrix.subheader("Confusion matrix")
    matrix.altair_chart(charts.confusion(metrics["confusion_matrix"]), width="stretch")
    figures.subheader("Per digit")
    figures.altair_chart(charts.per_class(metrics["per_class"]), width="stretch")
    figures.dataframe(pd.DataFrame(metrics["per_class"]).set_index("digit"), width="stretch")

card = artefacts.artefact(config.base_path, version, model_dir.MODEL_CARD)
if card is not None:
    with st.expander(f"Model card of version {version}: how it was trained"):
        st.json(card)


def pixels(entry: dict) -> np.ndarray:
    """A listed mistake's image, kept in metrics.json as base64 of its 784 bytes."""
    return np.frombuffer(base64.b64decode(entry["pixels"]), np.uint8).reshape(28, 28)


uploads = artefacts.artefact(config.base_path, version, model_dir.UPLOADS) or {}
with artefacts.read_as_expected(f"Version {version}'s accuracy by source (metrics.json, uploads.json)"):
    by_source = [
        (name, "trainer: the arrays", source) for name, source in metrics.get("by_source", {}).items()
    ] + [
        (name, f"bench-uploads ({uploads.get('measured_on', '?')}): files through the CLI and server", source)
        for name, source in uploads.get("sources", {}).items()
    ]
    if by_source:
        st.subheader("Accuracy by source of digits")
        rows = [
            {"source": name, "accuracy": f"{s['accuracy']:.2%}", "images": s["images"], "measured by": how}
            for name, how, s in by_source
        ]
        st.dataframe(pd.DataFrame(rows).set_index("source"), width="stretch")
        if not uploads:
            st.caption(
                "Typeset digits and the UCI handwriting join this table once `make bench-uploads` "
                "has scored this version."
            )
        for name, _, source in by_source:
            drawn = [m for m in source.get("misses", []) if "pixels" in m]
            if drawn:
                st.caption(f"{artefacts.plain(name)}: its most confident misses (true → read)")
                for column, miss in zip(st.columns(len(drawn)), drawn, strict=True):
                    column.image(pixels(miss), width=42)
                    column.caption(f"{miss['label']} → {miss['predicted']}")

with artefacts.read_as_expected(f"Version {version}'s misclassified test images (metrics.json)"):
    mistakes = [m for m in metrics.get("misclassified", []) if "pixels" in m]
    st.subheader(
        f"Misclassified test images ({len(metrics.get('misclassified', []))} in all, most confident first)"
    )
    per_row = 10
    for start in range(0, min(len(mistakes), 50), per_row):
        for column, mistake in zip(st.columns(per_row), mistakes[start : start + per_row], strict=False):
            column.image(pixels(mistake), width=56)
            column.caption(
                f"#{mistake['index']}: {mistake['label']} → {mistake['predicted']} "
                f"({mistake['confidence']:.0%})"
            )
