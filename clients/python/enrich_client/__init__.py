"""Python client for the Enrich gRPC service. Needs grpcio and protobuf only (no torch).

`EnrichClient` (blocking) and `AsyncEnrichClient` (asyncio) make the same calls; `enrich-client` is the
command line (`enrich-client bulk` for whole catalogues).
"""

from .aio import AsyncEnrichClient
from .client import IMAGE_SUFFIXES, EnrichClient, EnrichError, image_files

__all__ = ["IMAGE_SUFFIXES", "AsyncEnrichClient", "EnrichClient", "EnrichError", "image_files"]
