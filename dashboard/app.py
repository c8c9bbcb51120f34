"""The dashboard: `streamlit run dashboard/app.py` from the project root (port 8080, .streamlit/).

Configuration from the environment: MODEL_DIR (default models), MODEL_NAME (mnist),
SERVING_GRPC (localhost:8500), SERVING_REST (http://localhost:8501).
"""

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "pages"

st.set_page_config(page_title="MNIST platform", page_icon="✏️", layout="wide")
st.navigation(
    [
        st.Page(PAGES / "predict.py", title="Predict", icon="🔮", default=True),
        st.Page(PAGES / "training.py", title="Training", icon="📈"),
        st.Page(PAGES / "evaluation.py", title="Evaluation", icon="🎯"),
        st.Page(PAGES / "models.py", title="Models", icon="🗂️"),
    ]
).run()
