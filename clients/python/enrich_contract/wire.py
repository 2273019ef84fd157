"""The API's conventions, defined once for every Python surface (the server's HTTP API, the library and
`enrich-client`); the Node client follows the same rules (clients/node/enrich.js).

Caption modes: the proto's CaptionMode names, with or without their CAPTION_MODE_ prefix, in any case:
`generate`, `beam_search`, `template`, `skip` (so `BEAM_SEARCH` and `CAPTION_MODE_BEAM_SEARCH` work too).
Anything else is refused with the list of valid names; unset means the server's default (generate).

JSON: protobuf's canonical JSON mapping, as the HTTP API, grpc-gateway, Envoy's transcoder and
`grpcurl -emit-defaults` write it: lowerCamelCase names (`requestId`, `baseColour`, `articleType`,
`productDisplayName`: the catalogue's own column names), enums by name, 64-bit integers as strings,
durations as "1.5s", and every field present, zeros included.
"""

from __future__ import annotations

from google.protobuf import json_format

from enrich.v1 import enrich_pb2

CAPTION_MODE_PREFIX = "CAPTION_MODE_"
CAPTION_MODES: tuple[str, ...] = tuple(name.removeprefix(CAPTION_MODE_PREFIX).lower()
                                       for name, value in enrich_pb2.CaptionMode.items() if value)


# The attributes with a typed Metadata field of their own (Fashion Product Images' columns): JSON (column)
# name -> field name. Every attribute, these included, is also in Metadata.attributes by its column name.
TYPED_ATTRIBUTES: dict[str, str] = {f.json_name: f.name for f in enrich_pb2.Metadata.DESCRIPTOR.fields
                                    if f.message_type is not None and f.message_type.name == "Prediction"}

# What an answer holds beyond the labels and caption only when asked: EnrichRequest's include_* flags.
INCLUDE_FLAGS: tuple[str, ...] = tuple(f.name for f in enrich_pb2.EnrichRequest.DESCRIPTOR.fields
                                       if f.name.startswith("include_"))


def caption_mode(value: str | int | None) -> int:
    """A caption mode, by name or number, as the proto's enum value (0: unset, the server's default).
    Raises ValueError, in words that name the valid ones."""
    if value is None or value == "":
        return enrich_pb2.CAPTION_MODE_UNSPECIFIED
    if isinstance(value, int) and not isinstance(value, bool):
        if value in enrich_pb2.CaptionMode.values():
            return value
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith(CAPTION_MODE_PREFIX) else CAPTION_MODE_PREFIX + name
        if name in enrich_pb2.CaptionMode.keys():  # noqa: SIM118 (an enum wrapper, not a dict)
            return enrich_pb2.CaptionMode.Value(name)
    raise ValueError(f"caption mode {value!r} is not one of {', '.join(CAPTION_MODES)}")


def caption_mode_name(value: int) -> str:
    """The short name of a caption mode value ("beam_search")."""
    return enrich_pb2.CaptionMode.Name(value).removeprefix(CAPTION_MODE_PREFIX).lower()


def to_json(message) -> dict:
    """A message as the JSON every Enrich surface writes (see the module's docstring)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def request_from_json(data: dict) -> enrich_pb2.EnrichRequest:
    """An EnrichRequest from its JSON (either field naming), with the caption mode read by the rule above.
    Raises ValueError in words."""
    if not isinstance(data, dict):
        raise ValueError("the JSON body is not an EnrichRequest: it must be an object")
    data = dict(data)
    for key in ("captionMode", "caption_mode"):
        if key in data:
            data[key] = caption_mode(data[key])
    try:
        return json_format.ParseDict(data, enrich_pb2.EnrichRequest())
    except json_format.ParseError as error:
        raise ValueError(f"the JSON body is not an EnrichRequest: {error}") from error
