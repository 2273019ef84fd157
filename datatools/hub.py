"""Is the Hugging Face hub reachable? Asked once, quickly, by every path that could download."""

from __future__ import annotations

import functools
import os
import socket
import urllib.parse
import urllib.request


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connection attempt, so that a missing hub costs seconds, not the hub client's retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    if urllib.request.getproxies().get("https"):  # behind a proxy a direct connection says nothing: let the client try
        return True
    from huggingface_hub import constants

    url = urllib.parse.urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True
