"""Python client for the Enrich gRPC service. Needs grpcio and protobuf only (no torch)."""

from .client import IMAGE_SUFFIXES, EnrichClient, EnrichError, image_files

__all__ = ["IMAGE_SUFFIXES", "EnrichClient", "EnrichError", "image_files"]
