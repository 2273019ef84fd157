"""The Enrich runtime, shared by the trainer and the server: what it takes to answer an image.

Submodules, in data-path order: `decode` and `preprocess` (bytes -> pixels), `model` (one encoder pass ->
heads and captioner), `backends` (where the encoder pass runs), `pipeline` (the stages every host calls),
`bundle` (the artifact; `bundle_config` is its torch-free description), plus `schema` (vocabularies and
taxonomy), `consistency` (captions that agree with the labels) and `metrics` (scores and their table).
Where catalogues and bundles come from (synthetic catalogues, dataset loading, the hub, fetching) is
`enrich_data`; training is `enrich_trainer`.

Importing the package is cheap: torch loads only with the submodules that need it. Still, `import
enrich_model` is all a Hugging Face user needs before `VisionEncoderDecoderModel.from_pretrained(
BUNDLE/captioner)`: the TinyViT encoder registers itself with transformers' Auto classes as soon as
transformers is imported (before or after this package).
"""

from importlib import metadata

import wrapt

try:
    __version__ = metadata.version("enrich-service")  # the release, from enrich_client/version.py at build time
except metadata.PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0+unknown"


@wrapt.when_imported("transformers")
def _register_with_transformers(_transformers: object) -> None:
    from . import model  # noqa: F401  (registration happens at import)
