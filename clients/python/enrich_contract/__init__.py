"""The rules the Enrich server and its clients share, in one place that needs neither grpc nor a model:
`wire` (caption modes, the include flags, the typed attributes, the JSON shape), `posterior` (an audit's
p_wrong), `tables` (reading catalogue CSVs). Only protobuf and the standard library: the server imports it
without the client SDK, and the client without the server.
"""
