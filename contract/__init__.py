"""The contract between the parts: the model directory's layout and the serving signature.

The trainer writes what these modules describe; the client, the dashboard, `make up` and the benchmarks
read it. The model server does not import it: like TF Serving, it serves any SavedModel by its
SignatureDefs and finds versions by TF Serving's own rule. Nothing here imports TensorFlow.
"""
