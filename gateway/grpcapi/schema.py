"""The gRPC messages the gateway speaks, from the descriptor set tools/grpc_descriptors.py writes.

The set is loaded into a private descriptor pool, not the process's default one: a process that
also imports tritonclient's or tensorflow-serving-api's generated modules (the tests do) would
otherwise see the same files defined twice, which protobuf refuses. Message classes are built from
the pool by full name; on the wire they are the clients' own messages.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

SET = Path(__file__).with_name("protos.binpb")


@cache
def pool() -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet.FromString(SET.read_bytes())
    p = descriptor_pool.DescriptorPool()
    for f in files.file:  # written with every file after the files it imports
        p.Add(f)
    return p


@cache
def message(full_name: str) -> type[Message]:
    """The class of a message by its full protobuf name, e.g. "tensorflow.serving.PredictRequest"."""
    return message_factory.GetMessageClass(pool().FindMessageTypeByName(full_name))
