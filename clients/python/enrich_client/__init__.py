"""Python client for the Enrich gRPC service. Needs grpcio and protobuf only (no torch).

`EnrichClient` (blocking) and `AsyncEnrichClient` (asyncio) make the same calls; `enrich-client` is the
command line (`enrich-client bulk` for whole catalogues). grpc is imported when a client is first used, not by
`import enrich_client`: code that only needs the shared rules (`enrich_contract`) never pays for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from enrich_contract.wire import CAPTION_MODES, caption_mode, to_json

from .version import __version__

if TYPE_CHECKING:
    from .aio import AsyncEnrichClient
    from .client import IMAGE_SUFFIXES, EnrichClient, EnrichError, image_files

_LAZY = {"AsyncEnrichClient": ".aio", "EnrichClient": ".client", "EnrichError": ".client",
         "IMAGE_SUFFIXES": ".client", "image_files": ".client"}

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


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
