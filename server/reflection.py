"""Server reflection, both protocol versions, with the proto's comments.

grpcio-reflection implements `grpc.reflection.v1alpha`; newer tools (grpcurl 1.9+, Postman) ask for
`grpc.reflection.v1` first. The two are the same messages under another package, so one servicer
answers both. The descriptors it serves come from the descriptor set that protos/generate.py writes
with source info, so `grpcurl describe` shows the proto's documentation; the generated Python modules
carry descriptors without comments.
"""

from __future__ import annotations

from importlib import resources

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

V1_SERVICE = "grpc.reflection.v1.ServerReflection"


def documented_files() -> dict[str, bytes]:
    """file name -> serialized FileDescriptorProto with comments, for the Enrich protos."""
    data = resources.files("enrich.v1").joinpath("enrich_descriptor_set.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    return {file.name: file.SerializeToString() for file in files}


class DocumentedReflection(reflection.aio.ReflectionServicer):
    def __init__(self, service_names: tuple[str, ...], documented: dict[str, bytes]) -> None:
        super().__init__(service_names)
        self.documented = documented

    async def ServerReflectionInfo(self, request_iterator, context):
        async for response in super().ServerReflectionInfo(request_iterator, context):
            if response.HasField("file_descriptor_response"):
                files = response.file_descriptor_response.file_descriptor_proto
                swapped = [self.documented.get(descriptor_pb2.FileDescriptorProto.FromString(f).name, f)
                           for f in files]
                del files[:]
                files.extend(swapped)
            yield response


def enable_reflection(service_names: tuple[str, ...], server: grpc.aio.Server) -> None:
    names = (*service_names, reflection.SERVICE_NAME, V1_SERVICE)
    servicer = DocumentedReflection(names, documented_files())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(V1_SERVICE, {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString),
    }),))
