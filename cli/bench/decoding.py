"""How fast camera JPEGs decode on this machine's cores: full decode, Pillow's DCT-scaled draft (what the
server does), and simplejpeg's scaled decode, each on the server's decode thread count."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from enrich_model.decode import decode_image


def full_decode(data: bytes) -> object:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def images_per_second(decode: Callable[[bytes], object], images: list[bytes], threads: int) -> float:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(decode, images[:threads]))  # warm
        started = time.perf_counter()
        list(pool.map(decode, images))
        return len(images) / (time.perf_counter() - started)


def decode_speeds(images: list[bytes], preprocessing, threads: int) -> dict[str, float]:
    """img/s per decoder; `server_path` is Preprocessing.from_bytes, exactly the server's decode stage."""
    target = preprocessing.decode_target
    speeds = {
        "full": images_per_second(full_decode, images, threads),
        "draft": images_per_second(lambda data: decode_image(data, target=target), images, threads),
        "server_path": images_per_second(preprocessing.from_bytes, images, threads),
    }
    try:
        import simplejpeg
    except ImportError:
        return speeds
    speeds["simplejpeg"] = images_per_second(
        lambda data: simplejpeg.decode_jpeg(data, min_width=2 * target, min_height=2 * target), images, threads)
    return speeds
