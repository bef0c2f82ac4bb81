"""The gateway's gRPC transport: the schema (schema.py, from protos.binpb) and the server (server.py).
The protocols it carries are in gateway/protocols/ (v2_grpc.py, tfs_grpc.py)."""
