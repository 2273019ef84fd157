"""Generated gRPC code for the Enrich API (package enrich.v1). Do not edit: run protos/generate.py."""
