"""The Enrich model package, shared by the trainer and the server.

Submodules, in data-path order: `preprocess` (bytes -> pixels), `model` (one encoder pass -> heads and
captioner), `predict` (batch inference), `bundle` (the artifact), plus `schema` (vocabularies and
taxonomy), `data` (catalogue loading) and `synth` (a synthetic catalogue). Importing the package is
cheap: torch loads only with the submodules that need it.
"""

__version__ = "0.1.0"
