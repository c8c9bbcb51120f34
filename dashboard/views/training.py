"""Training curves of each version, and of a run still in progress, drawn live."""

import streamlit as st

from contract import model_dir
from dashboard import artefacts, charts
from dashboard.settings import settings

config = settings()
st.title("Training")


@st.fragment(run_every=2)
def live_runs() -> None:
    records = [r for r in artefacts.runs(config.base_path) if r.get("state") == "running"]
    running = [r for r in records if not artefacts.is_silent(r)]
    for run in (r for r in records if artefacts.is_silent(r)):
        st.caption(
            f"Run {run['run_id']} ({run['arch']}) stopped reporting at epoch {run.get('epoch', 0)} "
            f"({run['updated_at']}): its trainer was stopped without a word, and exported nothing."
        )
    if not running:
        st.caption("No training run in progress.")
        return
    for run in running:
        done, planned = run.get("epoch", 0), run.get("planned_epochs", 0) or 1
        st.subheader(f"Run {run['run_id']} ({run['arch']}): epoch {done} of up to {planned}")
        st.progress(min(1.0, done / planned))
        if done:
            columns = st.columns(len(charts.METRICS))
            for column, metric in zip(columns, charts.METRICS, strict=True):
                column.altair_chart(charts.curves({run["run_id"]: run["history"]}, metric), width="stretch")


live_runs()

versions = artefacts.versions(config.base_path)
if not versions:
    st.info(f"No model version in {config.base_path} yet: train one with `make up` or `python -m trainer`.")
    st.stop()

chosen = st.multiselect("Versions", versions, default=versions[:1], format_func=lambda v: f"version {v}")
histories = {}
for version in chosen:
    history = artefacts.artefact(config.base_path, version, model_dir.HISTORY)
    if history is None:
        st.warning(f"Version {version} has no assets.extra/history.json.")
    else:
        histories[f"version {version}"] = history
if histories:
    st.caption("Solid: training; dashed: validation. The dashed rule marks the epoch early stopping kept.")
    for metric in charts.METRICS:
        st.altair_chart(charts.curves(histories, metric), width="stretch")
