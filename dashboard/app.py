"""The dashboard: `streamlit run dashboard/app.py` from the project root (port 8080, .streamlit/).

Configuration from the environment: MODEL_DIR (default models), MODEL_NAME (mnist),
SERVING_GRPC (localhost:8500), SERVING_METRICS (the servers' Prometheus endpoint,
http://localhost:8501/monitoring/prometheus/metrics), MODEL_CONFIG_FILE (the server's, for its version
labels).
"""

from pathlib import Path

import streamlit as st

from dashboard.serving_link import warm_up

# Not "pages/": Streamlit would also build its older automatic navigation from a folder of that name.
VIEWS = Path(__file__).parent / "views"
SAMPLES = Path(__file__).parent / "samples"

# The tab's icon is one of MNIST's 7s, served by the dashboard itself: a material icon there would be
# fetched from Google's font servers, which a dashboard on a closed network cannot reach.
st.set_page_config(page_title="MNIST platform", page_icon=str(SAMPLES / "mnist-7-test0.png"), layout="wide")
warm_up()  # the first prediction is then as quick as the rest
st.navigation(
    [
        st.Page(VIEWS / "predict.py", title="Predict", icon=":material/draw:", default=True),
        st.Page(VIEWS / "training.py", title="Training", icon=":material/show_chart:"),
        st.Page(VIEWS / "evaluation.py", title="Evaluation", icon=":material/fact_check:"),
        st.Page(VIEWS / "models.py", title="Models", icon=":material/dns:"),
        st.Page(VIEWS / "monitor.py", title="Serving", icon=":material/monitoring:", url_path="serving"),
    ]
).run()
