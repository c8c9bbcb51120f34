"""TF Serving's API (its gRPC services and messages, and TensorFlow's protos they use) as generated,
typed modules of this repository's own, importable without TensorFlow.

    from tfs_api.tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

The messages are tensorflow-serving-api's: the same proto files, packages and full names, so they are
TF Serving's on the wire and in text format. In a process that also imports TensorFlow's own modules
(the server, the trainer), both register the same files, byte for byte, in protobuf's default pool,
which takes them once: the message classes are then one and the same. `make protos` regenerates the
package (tfs_api/regenerate.py).
"""
