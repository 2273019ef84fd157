"""Run `enrich serve` as a child process on a free loopback port (for the demo and the benchmark)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def start_server(bundle: Path, log_path: Path, *options: str, echo: bool = False) -> tuple[subprocess.Popen, int]:
    """Start the server and return once it reports SERVING; its stderr goes to `log_path`.

    Its metrics and HTTP ports are free ones too, unless `options` name them."""
    metrics = () if "--metrics-port" in options else ("--metrics-port", "0")
    metrics += () if "--http-port" in options else ("--http-port", "0")
    command = [sys.executable, "-m", "enrich_cli.main", "serve", "--model", str(bundle), "--port", "0",
               "--host", "127.0.0.1", *metrics, *options]
    if echo:
        print(f"$ {' '.join(command)}  (log: {log_path})", flush=True)
    log = open(log_path, "w")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    port = 0
    for line in server.stdout:  # ends at EOF if the server dies
        if echo:
            print(f"   {line.rstrip()}", flush=True)
        if line.startswith("enrich server listening on port"):
            port = int(line.split()[-1])
        if line.startswith("enrich server SERVING"):
            return server, port
    server.kill()
    raise RuntimeError(f"the server did not start; see {log_path}")
