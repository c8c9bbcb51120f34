"""Live predictions: upload images or draw a digit, see what the model saw and what it answered."""

import csv
import io
import time
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from client import ImageError, ServingClientError, normalise_bytes
from client.decode import decode
from client.normalise import Normalised
from dashboard import artefacts, charts
from dashboard.occlusion import heat_map, overlay
from dashboard.serving_link import client, not_answering
from dashboard.settings import settings

# An upload is shown at most this large, beside its answers: a tall photo at full width would push them
# off the screen.
PREVIEW_BOX = (160, 160)
# Each occlusion map is one more request of 37 images: drawn for the first few answers only.
EXPLAINED = 4
# Answers drawn one to a row (the image, what the model saw, a chart); the rest go in one table: a
# browser given hundreds of charts at once takes seconds to draw them.
DRAWN = 24
WHY = "why: the red ink decides"
# Shipped with the dashboard (samples/SOURCES.md): each name is the kind, then the digit it shows.
KINDS = {"mnist": "MNIST", "photo": "photo", "typeset": "typeset", "board": "chalkboard"}
SAMPLES = sorted(
    (p for p in (Path(__file__).parent.parent / "samples").iterdir() if p.suffix in {".png", ".jpg"}),
    key=lambda p: (list(KINDS).index(p.stem.split("-")[0]), p.name),
)


# Images per Predict request: the most the stack's server takes in one (max_batch_size in
# serving/config/batching.config); more uploads go in several requests.
REQUEST_BATCH = 64


@st.cache_data(max_entries=256, show_spinner=False)
def normalised_upload(data: bytes) -> Normalised:
    """An upload's normalisation, once per file's bytes: every rerun (a click anywhere) would redo it."""
    return normalise_bytes(data)


def sample_label(path: Path) -> str:
    kind, digit = path.stem.split("-")[:2]
    return f"{digit} · {KINDS[kind]}"


def preview(data: bytes) -> Image.Image:
    """The upload as the person sent it (turned the right way up), scaled down to PREVIEW_BOX."""
    image = decode(data)
    image.thumbnail(PREVIEW_BOX)
    return image


def why(image: np.ndarray, answered: int) -> None:
    """The occlusion map of one image, asked of the version that answered it, in the current column."""
    started = time.perf_counter()
    try:
        _, heat = heat_map(
            image,
            lambda batch: np.array(
                [p.probabilities for p in client().predict(batch, config.model_name, version=answered)]
            ),
        )
    except ServingClientError as err:
        st.caption(f"no occlusion map: {err.message}")
        return
    took_ms = (time.perf_counter() - started) * 1000
    st.image(overlay(image, heat), caption=f"{WHY} ({took_ms:.0f} ms)", width=84)


config = settings()
st.title("Predict")


@st.cache_data(ttl=2, show_spinner=False)
def served_versions(model: str) -> list[int]:
    """The versions the server answers from now, newest first; [] when it cannot say."""
    try:
        return sorted((s.version for s in client().status(model) if s.state == "AVAILABLE"), reverse=True)
    except ServingClientError:
        return []


def known_labels(model: str) -> list[str]:
    """The labels the server's config file gives the model, when the dashboard knows that file."""
    if config.model_config_file is None:
        return []
    by_version = artefacts.version_labels(str(config.model_config_file), model)
    return sorted(label for labels in by_version.values() for label in labels)


def refusal(err: ServingClientError, version: int | None, label: str | None) -> str:
    """What went wrong, in the page's words where the server's are its own jargon."""
    served = ", ".join(map(str, served_versions(config.model_name))) or "none"
    if err.status == "NOT_FOUND" and version is not None:
        model = artefacts.plain(config.model_name)
        return f"Version {version} of {model} is not being served (served now: {served})."
    if err.status == "INVALID_ARGUMENT" and label is not None and "label" in err.message:
        return f"The server gives no version the label {artefacts.plain(repr(label))} (served now: {served})."
    return f"The server refused the request: {artefacts.plain(err.message)}"


left, right = st.columns(2)
target = left.selectbox("Version", ["latest", "a version number", "a label"])
version = label = None
if target == "a version number":
    served = served_versions(config.model_name)
    if served:
        version = right.selectbox("Version served", served)
    else:
        version = int(right.number_input("Version", min_value=0, step=1, value=1))
elif target == "a label":
    labels = known_labels(config.model_name)
    if labels:
        label = right.selectbox("Label", labels)
    else:
        label = right.text_input("Label", placeholder="e.g. stable, as the server's config names it") or None

uploads = st.file_uploader(
    "Images of digits",
    # HEIC and AVIF too, so that a phone's photo is told why it cannot be read (the normaliser names
    # them), rather than refused by the uploader in its own words.
    type=["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "heic", "heif", "avif"],
    accept_multiple_files=True,
)
inputs = [(upload.name, upload.getvalue()) for upload in uploads or []]
sample = st.pills("No digit at hand? Try a sample", SAMPLES, format_func=sample_label, key="sample")
if sample is not None:
    inputs.append((sample.name, sample.read_bytes()))
with st.expander("...or draw one", expanded=not inputs):
    from streamlit_drawable_canvas import st_canvas

    drawing = st_canvas(
        stroke_width=18, stroke_color="#000000", height=280, width=280, return_image_data=True, key="canvas"
    )
    if drawing.json_data and drawing.json_data.get("objects") and drawing.image_bytes:
        inputs.append(("drawing", drawing.image_bytes))

if not inputs:
    st.info("Upload images, try a sample or draw a digit to see the model's answer.")
    st.stop()

normalised, results = [], []
reading = st.progress(0.0, "Reading the images...") if len(inputs) > 1 else None
for done, (name, data) in enumerate(inputs, 1):
    try:
        normalised.append((name, data, normalised_upload(data)))
    except ImageError as err:
        st.error(f"{artefacts.plain(name)}: {artefacts.plain(str(err))}")
        results.append({"image": name, "error": str(err)})
    if reading is not None:
        reading.progress(done / len(inputs), f"Reading the images... {done} of {len(inputs)}")
if reading is not None:
    reading.empty()

for start in range(0, len(normalised), REQUEST_BATCH):  # each batch's answers shown as they come
    batch = normalised[start : start + REQUEST_BATCH]
    started = time.perf_counter()
    try:
        answers = client().predict([n.tensor for _, _, n in batch], config.model_name, version, label)
    except ServingClientError as err:
        if not_answering(err):
            st.error(f"The model server at {config.grpc} is not answering. Start it, then try again.")
        else:
            st.error(refusal(err, version, label))
        st.stop()
    round_trip_ms = (time.perf_counter() - started) * 1000
    st.caption(f"{len(answers)} image(s) in one request, round trip {round_trip_ms:.0f} ms.")
    for index, ((name, data, seen), answer) in enumerate(zip(batch, answers, strict=True), start):
        results.append(
            {
                "image": name,
                "digit": answer.digit,
                "confidence": max(answer.probabilities),
                "version": answer.version,
                **{f"p{d}": p for d, p in enumerate(answer.probabilities)},
            }
        )
        if index >= DRAWN:
            continue
        uploaded, model_saw, reason, verdict, chart = st.columns([2, 1, 1, 1, 3])
        uploaded.image(preview(data), caption=name)
        model_saw.image(seen.image, caption="what the model saw", width=84)
        if index < EXPLAINED:
            with reason:
                why(seen.tensor, answer.version)
        verdict.metric("Digit", answer.digit)
        verdict.caption(f"{max(answer.probabilities):.1%} sure, version {answer.version}")
        chart.altair_chart(charts.probabilities(answer.probabilities), width="stretch")

answered = [r for r in results if "digit" in r]
if len(answered) > DRAWN:
    st.caption(f"The other {len(answered) - DRAWN} answers, in a table (and in the CSV):")
    st.dataframe(
        [{k: r[k] for k in ("image", "digit", "confidence", "version")} for r in answered[DRAWN:]],
        column_config={"confidence": st.column_config.NumberColumn(format="percent")},
        hide_index=True,
    )

table = io.StringIO()
writer = csv.DictWriter(
    table, fieldnames=["image", "digit", "confidence", "version", *(f"p{d}" for d in range(10)), "error"]
)
writer.writeheader()
writer.writerows(results)
st.download_button("Download results (CSV)", table.getvalue(), "predictions.csv", "text/csv")
