"""Training curves of each version, and of a run still in progress, drawn live."""

import streamlit as st

from contract import model_dir
from dashboard import artefacts, charts
from dashboard.settings import settings

config = settings()
st.title("Training")


# A run that failed is told of while it is among this many of the newest runs: the next run's news.
RECENT_RUNS = 3


@st.fragment(run_every=2)
def live_runs() -> None:
    with artefacts.read_as_expected(f"A run's progress file ({model_dir.RUNS}/*/{model_dir.PROGRESS_FILE})"):
        every = artefacts.runs(config.base_path)
        for run in (r for r in every[:RECENT_RUNS] if r.get("state") == "failed"):
            st.warning(
                f"Run {artefacts.plain(run['run_id'])} ({artefacts.plain(run['arch'])}) failed at epoch "
                f"{run.get('epoch', 0)} ({run['updated_at']}) and exported nothing: "
                f"{artefacts.plain(run.get('error') or 'no reason recorded')}"
            )
        records = [r for r in every if r.get("state") == "running"]
        running = [r for r in records if not artefacts.is_silent(r)]
        for run in (r for r in records if artefacts.is_silent(r)):
            st.caption(
                f"Run {artefacts.plain(run['run_id'])} ({artefacts.plain(run['arch'])}) stopped reporting at "
                f"epoch {run.get('epoch', 0)} ({run['updated_at']}): its trainer was stopped without a word, "
                "and exported nothing."
            )
        if not running:
            st.caption("No training run in progress.")
            return
        for run in running:
            done, planned = run.get("epoch", 0), run.get("planned_epochs", 0) or 1
            st.subheader(
                f"Run {artefacts.plain(run['run_id'])} ({artefacts.plain(run['arch'])}): epoch {done} of up "
                f"to {planned}"
            )
            st.progress(min(1.0, max(0.0, done / planned)))  # a hand-edited record may say anything
            if done:
                columns = st.columns(len(charts.METRICS))
                for column, metric in zip(columns, charts.METRICS, strict=True):
                    column.altair_chart(
                        charts.curves({run["run_id"]: run["history"]}, metric), width="stretch"
                    )


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
        st.warning(f"Version {version} has no readable assets.extra/history.json.")
    elif not artefacts.is_history(history, tuple(charts.METRICS)):
        st.warning(
            f"Version {version}'s history.json is not as this dashboard reads it: a list of numbers a metric."
        )
    else:
        histories[f"version {version}"] = history
if histories:
    st.caption("Solid: training; dashed: validation. The dashed rule marks the epoch early stopping kept.")
    with artefacts.read_as_expected("A version's history.json"):
        for metric in charts.METRICS:
            st.altair_chart(charts.curves(histories, metric), width="stretch")
