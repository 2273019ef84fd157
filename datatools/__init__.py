"""Data tools: where catalogues and bundles come from, apart from the runtime that serves a bundle.

`catalogue` (styles.csv folders and Hugging Face datasets, for training and evaluation), `synth` and
`photolike` (synthetic catalogues and their less tidy photographs), `hub` (is the Hugging Face hub
reachable?) and `fetch` (a bundle from the hub, a URL, an object store or a path, for init containers).
"""
