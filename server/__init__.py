"""The gRPC server: `enrich serve --model BUNDLE`."""
