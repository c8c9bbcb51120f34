"""The contract between the parts: the model directory's layout and the serving signature.

The trainer writes what these modules describe; the client, the dashboard, `make up` and the benchmarks
read it. The model server imports only the version-name rule (model_dir.version_number, TF Serving's
own, so what the trainer numbers and what a server serves agree): like TF Serving, it serves any
SavedModel by its SignatureDefs. Nothing here imports TensorFlow.
"""
