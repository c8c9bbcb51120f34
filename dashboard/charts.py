"""Altair charts: training curves, confusion matrix, per-class figures, probabilities."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

METRICS = ("loss", "accuracy", "recall")


def curves_frame(histories: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Long form: one row per (run, metric, split, epoch)."""
    rows = []
    for run, history in histories.items():
        for metric in METRICS:
            for split, key in (("training", metric), ("validation", f"val_{metric}")):
                for epoch, value in enumerate(history.get(key, []), start=1):
                    rows.append(
                        {"run": run, "metric": metric, "split": split, "epoch": epoch, "value": value}
                    )
    return pd.DataFrame(rows, columns=["run", "metric", "split", "epoch", "value"])


def curves(histories: dict[str, dict[str, Any]], metric: str) -> alt.Chart:
    """Training against validation for each run; the epoch early stopping kept is a dashed rule."""
    frame = curves_frame(histories)
    frame = frame[frame.metric == metric]
    lines = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color="run:N",
            strokeDash="split:N",
            tooltip=["run", "split", "epoch", alt.Tooltip("value:Q", format=".4f")],
        )
    )
    best = pd.DataFrame(
        [{"run": run, "epoch": h["best_epoch"]} for run, h in histories.items() if h.get("best_epoch")]
    )
    if best.empty:
        return lines.properties(height=260)
    rules = (
        alt.Chart(best)
        .mark_rule(strokeDash=[4, 4])
        .encode(
            x="epoch:Q", color="run:N", tooltip=["run", alt.Tooltip("epoch:Q", title="best epoch (kept)")]
        )
    )
    return (lines + rules).properties(height=260)


def confusion(matrix: list[list[int]]) -> alt.Chart:
    frame = pd.DataFrame(
        [{"true": t, "predicted": p, "count": matrix[t][p]} for t in range(10) for p in range(10)]
    )
    base = alt.Chart(frame).encode(x="predicted:O", y="true:O")
    heat = base.mark_rect().encode(
        color=alt.Color("count:Q", scale=alt.Scale(type="symlog")), tooltip=["true", "predicted", "count"]
    )
    text = base.mark_text(fontSize=10).encode(text="count:Q")
    return (heat + text).properties(height=360)


def per_class(rows: list[dict[str, Any]]) -> alt.Chart:
    frame = pd.DataFrame(rows).melt(id_vars=["digit"], value_vars=["precision", "recall"], var_name="figure")
    return (
        alt.Chart(frame)
        .mark_bar(clip=True)
        .encode(
            x="digit:O",
            xOffset="figure:N",
            y=alt.Y("value:Q", scale=alt.Scale(zero=False, domain=[min(0.9, frame.value.min() - 0.02), 1.0])),
            color="figure:N",
            tooltip=["digit", "figure", alt.Tooltip("value:Q", format=".4f")],
        )
        .properties(height=260)
    )


def probabilities(values: tuple[float, ...] | list[float]) -> alt.Chart:
    frame = pd.DataFrame({"digit": list(range(10)), "probability": list(values)})
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x="digit:O",
            y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1])),
            tooltip=["digit", alt.Tooltip("probability:Q", format=".4f")],
        )
        .properties(height=160)
    )


def over_time(frame: pd.DataFrame, value: str, series: str, title: str) -> alt.Chart:
    """A serving figure over the last minutes, one line per series (replica, status, quantile...)."""
    return (
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(
            x=alt.X("time:T", title=None, axis=alt.Axis(format="%H:%M:%S")),
            y=alt.Y(f"{value}:Q", title=title),
            color=alt.Color(f"{series}:N", title=series),
            tooltip=[
                series,
                alt.Tooltip("time:T", format="%H:%M:%S"),
                alt.Tooltip(f"{value}:Q", format=".4g"),
            ],
        )
        .properties(height=220)
    )


def batch_sizes(frame: pd.DataFrame) -> alt.Chart:
    """How many merged model calls had each batch size (the histogram's power-of-two buckets)."""
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("size:O", title="batch size (up to)"),
            y=alt.Y("batches:Q", title="model calls"),
            tooltip=["size", "batches"],
        )
        .properties(height=220)
    )
