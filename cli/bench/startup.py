"""What a serving process costs before it does any work: seconds to SERVING and resident memory.

    python -m enrich_cli.bench.startup BUNDLE [BUNDLE ...] [--starts 3] [--calls 32]

Each bundle is served `--starts` times by `enrich serve` (the defaults: on CPU, OpenVINO with the bundle's
export) from this interpreter, so run it with the venv to measure, e.g. one with only the serve-cpu extra.
Per start it prints one JSON line: seconds from launch to SERVING, VmRSS five seconds later, VmRSS after
`--calls` captioned unary calls, and whether torch was loaded into the process."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from enrich_cli.bench.images import catalogue_images
from enrich_cli.server_process import start_server

SETTLE_SECONDS = 5.0


def resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} reports no VmRSS")


def measure_start(bundle: Path, calls: int, folder: Path) -> dict:
    from enrich_client import EnrichClient

    started = time.monotonic()
    served = start_server(bundle, folder / "server.log")
    serving = time.monotonic() - started
    try:
        time.sleep(SETTLE_SECONDS)
        idle = resident_mb(served.process.pid)
        with EnrichClient(f"127.0.0.1:{served.port}") as client:
            for image in catalogue_images(calls, seed=1):
                client.enrich(image, caption_mode="generate")
        time.sleep(SETTLE_SECONDS)
        maps = Path(f"/proc/{served.process.pid}/maps").read_text()
        return {"bundle": str(bundle), "seconds_to_serving": round(serving, 2), "idle_rss_mb": round(idle),
                f"rss_after_{calls}_captioned_calls_mb": round(resident_mb(served.process.pid)),
                "torch_loaded": "libtorch" in maps}
    finally:
        served.process.terminate()
        served.process.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enrich_cli.bench.startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--starts", type=int, default=3, help="starts per bundle")
    parser.add_argument("--calls", type=int, default=32, help="captioned calls before the second reading")
    args = parser.parse_args(argv)
    for bundle in args.bundles:
        for _ in range(args.starts):
            with tempfile.TemporaryDirectory() as folder:
                print(json.dumps(measure_start(bundle, args.calls, Path(folder))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
