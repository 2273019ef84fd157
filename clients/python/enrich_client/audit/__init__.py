"""Auditing a catalogue against its images: what p_wrong means (`posterior`, shared with the server) and
`enrich-client audit` (the `audit` extra: NumPy, Pillow, faiss)."""
