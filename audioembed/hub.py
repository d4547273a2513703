"""Is the model hub reachable? A quick answer, so a machine without network fails in seconds.

Without it, a Hub id on an offline machine makes huggingface_hub retry for tens of seconds
before the real error. One TCP connection to the Hub's host (``$HF_ENDPOINT`` or
huggingface.co, port 443 or the URL's), under :data:`TIMEOUT_SECONDS`, decides; the answer is
kept for the rest of the process.
"""

from __future__ import annotations

import os
import socket
import threading
from functools import lru_cache
from urllib.parse import urlparse

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_SECONDS = 3.0


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT


@lru_cache(maxsize=8)
def _reachable(host: str, port: int, timeout: float) -> bool:
    result: list[bool] = []

    def attempt() -> None:  # name resolution has no timeout of its own: run it in a thread
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True, name="audioembed-hub-check")
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def hub_reachable(timeout: float = TIMEOUT_SECONDS) -> bool:
    """True when a TCP connection to the Hub's host opens within ``timeout`` seconds."""
    url = urlparse(hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    return _reachable(url.hostname or "", port, timeout)
