"""Python client for the Enrich gRPC service. Needs grpcio and protobuf only (no torch).

`EnrichClient` (blocking) and `AsyncEnrichClient` (asyncio) make the same calls; `enrich-client` is the
command line (`enrich-client bulk` for whole catalogues).
"""

from .aio import AsyncEnrichClient
from .client import IMAGE_SUFFIXES, EnrichClient, EnrichError, image_files
from .contract import CAPTION_MODES, caption_mode, to_json
from .version import __version__

__all__ = [
           "CAPTION_MODES",
           "IMAGE_SUFFIXES",
           "AsyncEnrichClient",
           "EnrichClient",
           "EnrichError",
           "__version__",
           "caption_mode",
           "image_files",
           "to_json",
]
