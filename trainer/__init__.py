"""Training: `enrich train` builds a model bundle from a catalogue."""
