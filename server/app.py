"""`enrich serve`: the server's lifecycle.

    check the settings and the bundle (torch-free) -> bind every port -> load and warm the model -> SERVING
    -> on SIGTERM: NOT_SERVING, refuse new calls, read stream items for half the grace, answer every
       accepted item -> exit 0

A wrong setting, a wrong or changed bundle, a backend this machine cannot run or a taken port stops it with
one line and exit 2. The ports are ports.py; the work behind them is the service (service.py).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from pathlib import Path

from enrich_model.bundle_config import BundleConfig, BundleError, open_bundle
from enrich_model.options import BackendError

from .allocator import limit_allocator
from .logs import configure_logging
from .settings import ServerSettings, parse_args

log = logging.getLogger("enrich.server")


def write_ready_file(path: Path, ports: dict[str, int | None], model_version: str) -> None:
    """Written whole, then renamed into place: a reader never sees half a file."""
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps({"status": "SERVING", "pid": os.getpid(), "model_version": model_version,
                                   **ports}) + "\n")
    os.replace(staging, path)


def announce(settings: ServerSettings, ports: dict[str, int | None]) -> None:
    print(f"enrich server listening on port {ports['port']}", flush=True)
    for name, what in (("http_port", "HTTP/JSON"), ("health_port", "health (plain text)")):
        if ports[name] is not None:
            print(f"enrich {what} on port {ports[name]}", flush=True)
    if ports["metrics_port"] is not None:
        print(f"enrich metrics on http://{settings.host}:{ports['metrics_port']}/metrics", flush=True)


async def serve(settings: ServerSettings, config: BundleConfig) -> None:
    from enrich_model.backends import choose_backend, needs_torch, resolve_device
    from enrich_model.bundle_info import BundleInfo

    from .ports import EnrichServer

    # A device, backend or precision this machine lacks, or an export it needs and cannot make: said now,
    # before any port opens.
    device = resolve_device(settings.device)
    choice = choose_backend(settings.backend, settings.precision, device.split(":")[0], settings.compile)
    if needs_torch(BundleInfo.read(settings.model, config), choice, settings.export_cache):
        # torch's import runs a subprocess (ldconfig): done before gRPC's threads exist, it does not trip
        # gRPC's fork handlers, whose log line would break JSON logs.
        await asyncio.get_running_loop().run_in_executor(None, importlib.import_module, "torch")
    server = EnrichServer(settings)
    announce(settings, await server.start())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loading = asyncio.create_task(server.load_model(config))
    try:
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({loading, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if loading in done:
            loading.result()  # a model that fails to load stops the server with the error
            print(f"enrich server SERVING model {config.model_version}", flush=True)
            if settings.ready_file:
                write_ready_file(settings.ready_file, server.ports, config.model_version)
            await waiter
    finally:
        log.info("shutting down: draining for up to %.0f s", settings.grace_seconds)
        loading.cancel()
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    limit_allocator()  # before any thread starts, which takes an arena of its own
    settings = parse_args(argv)
    configure_logging(settings.log_format)
    try:
        config = open_bundle(settings.model)  # a wrong path or changed weights: said now, before torch loads
        from .ports import check_ports_free

        check_ports_free(settings)  # a taken port too (and again at binding, should it be taken meanwhile)
        asyncio.run(serve(settings, config))
    except (BundleError, BackendError, OSError) as error:  # a wrong bundle, backend or port: one line
        print(f"enrich serve: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
