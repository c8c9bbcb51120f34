"""What the model server reports: each version's state, the signature, the default version."""

import pandas as pd
import streamlit as st

from client import ServingClientError
from dashboard import artefacts
from dashboard.serving_link import client, not_answering
from dashboard.settings import settings

config = settings()
st.title("Models")
# Often enough that a server restarting after a crash (about 5 s here) is seen down and then back.
REFRESH_S = 2


@st.fragment(run_every=REFRESH_S)
def server_view() -> None:
    try:
        statuses = client().status(config.model_name)
    except ServingClientError as err:
        if not_answering(err):
            st.error(f"The model server at {config.grpc} is not answering; asking again every {REFRESH_S} s.")
        elif err.status == "NOT_FOUND":
            st.warning(
                f"The server knows no version of {artefacts.plain(config.model_name)} yet "
                f"({artefacts.plain(err.message)})."
            )
        else:
            st.error(f"The model server refused the status call: {artefacts.plain(err.message)}")
        return
    available = [s.version for s in statuses if s.state == "AVAILABLE"]
    if available:
        st.success(f"Requests without a version go to version {max(available)}.")
    else:
        st.warning("No version is AVAILABLE: requests are refused until one loads.")
    labels = {}
    if config.model_config_file is not None:
        labels = artefacts.version_labels(str(config.model_config_file), config.model_name)
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "version": s.version,
                    "state": s.state,
                    "labels": ", ".join(labels.get(s.version, [])),
                    "status": s.error_code,
                    "message": s.error_message,
                }
                for s in statuses
            ]
        ),
        hide_index=True,
        width="stretch",
    )
    if any(s.state == "LOADING" for s in statuses):
        # TF Serving's status API says nothing of a failed attempt until the last (nor does ours).
        st.caption(
            "A version stays LOADING while a failed load is retried (--max_num_load_retries, a minute "
            "apart by default): the server's log says why each attempt failed, this table once it gives up."
        )
    if not available:
        return
    try:
        metadata = client().metadata(config.model_name)
    except ServingClientError as err:
        st.warning(f"No signature: {err.message}")
        return
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    for name, signature in signatures.items():
        if name.startswith("__"):
            continue
        rows = [
            {
                "signature": name,
                "role": role,
                "name": alias,
                "dtype": info["dtype"],
                "shape": [int(d["size"]) for d in info["tensor_shape"].get("dim", [])],
            }
            for role in ("inputs", "outputs")
            for alias, info in signature[role].items()
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


server_view()
