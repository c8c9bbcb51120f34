"""The serving monitor: requests, latency, errors and batch sizes of every replica, live.

Read from the servers' Prometheus endpoints under TF Serving's names (dashboard/monitor.py), so it works
the same against TF Serving and against ours, alone or as replicas behind the balancer.
"""

from datetime import datetime

import pandas as pd
import streamlit as st

from dashboard import charts
from dashboard.monitor import Monitor, Replica, Round, Window, combined
from dashboard.settings import settings

config = settings()
st.title("Serving")
REFRESH_S = 2
# The figures at the top and the batch-size chart cover this much of the latest history.
RECENT_S = 60


@st.cache_resource(show_spinner=False)
def monitor(metrics_url: str, model: str) -> Monitor:
    """One reader per process, started on the page's first visit and reading from then on."""
    return Monitor(metrics_url, model, every=REFRESH_S).start()


def row(at: float, replica: str, w: Window, version: int | None) -> dict:
    return {
        "time": datetime.fromtimestamp(at),
        "replica": replica,
        "version": "none" if version is None else str(version),
        "requests/s": w.requests_per_s,
        "p50": w.latency_ms(0.5),
        "p99": w.latency_ms(0.99),
        **{f"error:{status}": rate for status, rate in w.errors_per_s.items()},
    }


def timelines(rounds: list[Round]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per round and replica, and one per round for the replicas together."""
    apart, together = [], []
    for r in rounds:
        apart += [row(r.at, replica, w, r.versions.get(replica)) for replica, w in r.windows.items()]
        total = combined(r.windows.values())
        if total is not None:
            together.append(row(r.at, "all", total, None))
    return pd.DataFrame(apart), pd.DataFrame(together)


def summary(recent: list[Round]) -> Window | None:
    """The last minute's figures, every replica together; returns that minute as one window."""
    total = combined(w for r in recent for w in r.windows.values())
    if total is None:
        st.info(f"Reading the servers; the first figures come in {REFRESH_S} s.")
        return None
    span = sum(max(w.seconds for w in r.windows.values()) for r in recent if r.windows)
    requests = sum(total.requests.values())
    errors = requests - total.requests.get("OK", 0.0)
    p50, p99, batch = total.latency_ms(0.5), total.latency_ms(0.99), total.mean_batch_size
    cells = st.columns(5)
    cells[0].metric("requests/s", f"{requests / span:,.1f}")
    cells[1].metric("p50 latency", "-" if p50 is None else f"{p50:.2f} ms")
    cells[2].metric("p99 latency", "-" if p99 is None else f"{p99:.2f} ms")
    cells[3].metric("errors/s", f"{errors / span:,.2f}")
    cells[4].metric("mean batch size", "-" if batch is None else f"{batch:.1f}")
    st.caption(f"The last {RECENT_S} s, every replica together; latency as the server measures it.")
    return total


def charts_of(apart: pd.DataFrame, together: pd.DataFrame, recent: Window | None) -> None:
    """The 10-minute charts; the batch sizes of `recent`, the last minute, when it was read."""
    left, right = st.columns(2)
    several = apart.replica.nunique() > 1
    rates = pd.concat([apart, together]) if several else apart
    left.altair_chart(charts.over_time(rates, "requests/s", "replica", "requests/s"), width="stretch")
    latency = together.melt(id_vars=["time"], value_vars=["p50", "p99"], var_name="quantile", value_name="ms")
    right.altair_chart(charts.over_time(latency.dropna(), "ms", "quantile", "latency (ms)"), width="stretch")

    left, right = st.columns(2)
    errors = [c for c in together.columns if c.startswith("error:")]
    if errors:
        by_status = together.melt(
            id_vars=["time"], value_vars=errors, var_name="status", value_name="errors/s"
        )
        by_status["status"] = by_status.status.str.removeprefix("error:")
        left.altair_chart(
            charts.over_time(by_status.fillna(0.0), "errors/s", "status", "errors/s"), width="stretch"
        )
    else:
        left.success("No request has failed in these minutes.")
    by_version = apart.groupby(["time", "version"], as_index=False)["requests/s"].sum()
    right.altair_chart(
        charts.over_time(by_version, "requests/s", "version", "requests/s by version answering"),
        width="stretch",
    )

    if recent is None:
        return
    sizes = [
        {"size": "more" if bound == float("inf") else str(int(bound)), "batches": n}
        for bound, n in sorted(recent.batch_sizes.items())
        if n > 0
    ]
    if sizes:
        st.altair_chart(charts.batch_sizes(pd.DataFrame(sizes)), width="stretch")
    else:
        st.caption("No batched model call in the last minute (batching is off, or no traffic came).")


def problems(problem: str | None, replicas: list[Replica]) -> list[Replica]:
    """Say what is wrong with the servers; the replicas answering."""
    if problem:
        st.error(f"{problem}. Asking again every {REFRESH_S} s.")
        return []
    for replica in replicas:
        if replica.gone_since is not None:
            since = datetime.fromtimestamp(replica.gone_since).strftime("%H:%M:%S")
            st.warning(
                f"Replica {replica.address} has gone: no longer among the server's addresses since {since}."
            )
        elif replica.problem:
            st.error(f"Replica {replica.address}: {replica.problem}. Asking again every {REFRESH_S} s.")
    return [r for r in replicas if r.gone_since is None and r.problem is None]


@st.fragment(run_every=REFRESH_S)
def live() -> None:
    """The history read so far stays drawn while a server is down: that is when it is wanted."""
    problem, replicas, rounds = monitor(config.metrics_url, config.model_name).snapshot()
    answering = problems(problem, replicas)
    if answering:
        st.dataframe(
            pd.DataFrame([{"replica": r.address, "version answering": r.version} for r in answering]),
            hide_index=True,
        )
    elif not problem and not replicas:
        st.info(f"Reading the servers; the first figures come in {REFRESH_S} s.")
        return
    recent = [r for r in rounds if r.at >= rounds[-1].at - RECENT_S] if rounds else []
    last_minute = summary(recent) if answering else None
    apart, together = timelines(rounds)
    if not apart.empty:
        charts_of(apart, together, last_minute)


st.caption(f"Every replica of {config.metrics_url}, read every {REFRESH_S} s; the charts show 10 minutes.")
live()
