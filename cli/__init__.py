"""The `enrich` command: synth, train, serve, info, demo."""
