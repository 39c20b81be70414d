"""The wire contract: anning_pb2 and anning_pb2_grpc, generated at build from proto/anning/v1."""
