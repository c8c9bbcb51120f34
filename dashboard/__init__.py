"""The Streamlit dashboard: training curves, test metrics, model versions and live predictions."""
