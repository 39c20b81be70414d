"""The gRPC service: servicers over the engine, access control, worker processes, metrics."""
