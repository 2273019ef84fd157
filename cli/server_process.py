"""Run `enrich serve` as a child process on free loopback ports (for the demo, the benchmark and tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class ServedProcess:
    process: subprocess.Popen
    ports: dict  # what the server wrote in its ready file: port, http_port, health_port, metrics_port, ...

    @property
    def port(self) -> int:
        return self.ports["port"]


def start_server(bundle: Path, log_path: Path, *options: str, echo: bool = False, timeout: float = 600.0,
                 launcher: Sequence[str] = (), env: Mapping[str, str] | None = None) -> ServedProcess:
    """Start the server and return once it reports SERVING (its --ready-file appears); its log goes to
    `log_path`. Its HTTP and metrics ports are free ones too, unless `options` name them. `launcher` comes before
    the command (e.g. one that runs it as another user), `env` adds to the environment."""
    ports = () if "--metrics-port" in options else ("--metrics-port", "0")
    ports += () if "--http-port" in options else ("--http-port", "0")
    ready = log_path.with_name(log_path.name + ".ready.json")
    ready.unlink(missing_ok=True)
    command = [*launcher, sys.executable, "-m", "enrich_cli.main", "serve", "--model", str(bundle), "--port", "0",
               "--host", "127.0.0.1", "--ready-file", str(ready), *ports, *options]
    if echo:
        print(f"$ {' '.join(command)}  (log: {log_path})", flush=True)
    with open(log_path, "w") as log:
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the server did not start; see {log_path}")
        time.sleep(0.05)
    served = ServedProcess(server, json.loads(ready.read_text()))
    if echo:
        print(f"   SERVING model {served.ports['model_version']} on port {served.port}", flush=True)
    return served
