"""`bulk` and `audit` with `--engine ray`: the catalogue as a Ray Data job, a local cluster or one at an address.

    sources (driver) -> Ray Data: map_batches(actor pool) -> answer rows (Parquet layout) -> driver -> parts

Each actor builds what answers once, in its constructor, and then maps batches of (id, location, catalogue
values) to answer rows:
  BundleEnricher  the torch-free pipeline from a bundle (a path, or any source `enrich fetch` takes), run by the
                  server's own in-process service: the answers are `enrich serve`'s;
  FleetEnricher   an existing Enrich fleet over gRPC (bulk's streams, with their retries), for teams that serve.
Actors read the images themselves (local paths, http(s), or any fsspec URL), so only ids and locations travel
through Ray. The driver is the one writer: it writes the rows to the same Parquet parts as a run on one machine,
and a rerun sends only the ids the parts lack. A worker that dies mid-batch has its batch run again by Ray (Ray
Data restarts the actor and retries its tasks); rows reach the parts only from finished batches, so none is lost
or written twice.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

import pyarrow as pa

from enrich.v1 import enrich_pb2

from .answer_parts import AnswerLayout, ParquetOutput
from .sources import Source
from .streaming import RequestOptions

# Batches an actor answers at once: like a server's several streams, one batch decodes while another is in the
# model (the in-process service and the fleet's channel both take concurrent calls).
CALLS_PER_ACTOR = 4


@dataclass(frozen=True)
class RayEngine:
    """Where and how wide the job runs."""

    address: str | None = None  # None: a local cluster on this machine; "auto": the one this machine joined
    actors: int = 0  # 0: the cluster's CPUs over threads
    threads: int = 2  # CPUs per actor (its model and decode threads)
    batch_size: int = 64  # images per batch an actor takes
    bundle: str | None = None  # answer in process from this bundle; None: call the fleet at `target`
    target: str | None = None
    client_options: dict = field(default_factory=dict)  # EnrichClient's keyword arguments (TLS, message size)


def _sources(batch: pa.Table) -> list[Source]:
    return [Source(key, location, tuple(json.loads(values).items()))
            for key, location, values in zip(batch["key"].to_pylist(), batch["location"].to_pylist(),
                                             batch["catalogue"].to_pylist(), strict=True)]


class BundleEnricher:
    """A Ray actor: the server's in-process service on a bundle (see the module)."""

    def __init__(self, bundle: str, options: RequestOptions, threads: int) -> None:
        from enrich_server.in_process import InProcessService, local_bundle
        from enrich_server.settings import ServerSettings

        self.options = options
        self.service = InProcessService(ServerSettings(model=local_bundle(bundle), threads=threads))
        self.layout = AnswerLayout.of(self.service.model_info())

    def __call__(self, batch: pa.Table) -> pa.Table:
        from .streaming import unreadable

        sources = _sources(batch)
        answers: dict[str, enrich_pb2.EnrichResponse] = {}
        requests = []
        for source in sources:
            try:
                requests.append(self.options.request(source, source.read()))
            except Exception as error:  # an unreadable input is a row, not the end of the run
                answers[source.key] = unreadable(source, error)
        answers |= {answer.request_id: answer for answer in self.service.answer(requests)}
        return self.layout.table(answers[source.key] for source in sources)


class FleetEnricher:
    """A Ray actor: bulk's streams to an Enrich fleet (see the module)."""

    def __init__(self, target: str, options: RequestOptions, client_options: dict, streams: int = 2) -> None:
        from .client import EnrichClient

        self.options, self.streams = options, streams
        self.client = EnrichClient(target, **client_options)
        self.client.wait_until_serving()
        info = self.client.model_info()
        self.layout, self.max_image_bytes = AnswerLayout.of(info), info.limits.max_image_bytes

    def __call__(self, batch: pa.Table) -> pa.Table:
        from .streaming import BulkRun

        sources = _sources(batch)
        collected = _Collected()
        options = self.options
        run = BulkRun(self.client, sources, collected, self.streams, options.top_k, options.caption_mode,
                      error_prior=options.error_prior, include=options.include)
        run.max_image_bytes = self.max_image_bytes
        run.run()
        return self.layout.table(collected.answers[source.key] for source in sources)


class _Collected:
    """An AnswerSink that keeps a batch's answers."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.answers: dict[str, enrich_pb2.EnrichResponse] = {}

    def write(self, response: enrich_pb2.EnrichResponse) -> None:
        self.answers[response.request_id] = response


def model_info(engine: RayEngine) -> enrich_pb2.ModelInfo:
    """The answering model's description, on the driver: from the bundle (without loading its graphs), or asked
    of the fleet."""
    if engine.bundle:
        from enrich_server.in_process import describe_bundle, local_bundle

        return describe_bundle(local_bundle(engine.bundle))
    from .client import EnrichClient

    with EnrichClient(engine.target, **engine.client_options) as client:
        client.wait_until_serving()
        return client.model_info()


def start(engine: RayEngine) -> int:
    """Joins (or starts) the cluster; its CPUs."""
    import logging

    import ray
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # our own bar shows the progress
    ray.data.DataContext.get_current().enable_progress_bars = False
    if not ray.is_initialized():
        ray.init(address=engine.address, ignore_reinit_error=True, log_to_driver=False,
                 include_dashboard=False if engine.address is None else None,
                 runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore"}})
    return int(ray.cluster_resources().get("CPU", 1))


def run_on_ray(engine: RayEngine, sources: list[Source], output: ParquetOutput, options: RequestOptions,
               quiet: bool = False) -> tuple[int, int]:
    """Answers every source the output lacks, into the output; (answered OK, failed) in this run."""
    import ray.data
    from tqdm import tqdm

    todo = [s for s in sources if s.key not in output.done]
    cpus = start(engine)
    if not todo:
        return 0, 0
    actors = engine.actors or max(1, cpus // engine.threads)
    table = pa.table({"key": [s.key for s in todo], "location": [s.location for s in todo],
                      "catalogue": [json.dumps(dict(s.catalogue)) for s in todo]})
    # Blocks cut here, on the driver: a repartition would be a task, and the actors may hold every CPU.
    block_rows = max(engine.batch_size, -(-len(todo) // (actors * 4)))
    dataset = ray.data.from_arrow([table.slice(at, block_rows) for at in range(0, len(todo), block_rows)])
    if engine.bundle:
        actor, arguments = BundleEnricher, (engine.bundle, options, engine.threads)
    else:
        actor, arguments = FleetEnricher, (engine.target, options, engine.client_options)
    answers = dataset.map_batches(actor, fn_constructor_args=arguments, batch_size=engine.batch_size,
                                  batch_format="pyarrow", num_cpus=engine.threads,
                                  compute=ray.data.ActorPoolStrategy(
                                      size=actors, max_tasks_in_flight_per_actor=CALLS_PER_ACTOR,
                                      max_concurrent_calls_per_actor=CALLS_PER_ACTOR,
                                      enable_true_multi_threading=True))
    ok = failed = 0
    with tqdm(total=len(sources), initial=len(sources) - len(todo), unit="img", desc="ray", file=sys.stderr,
              disable=quiet, dynamic_ncols=True) as bar:
        for answered in answers.iter_batches(batch_size=None, batch_format="pyarrow"):
            rows = output.write_table(answered)  # without ids written before (a retried task's)
            bad = sum(1 for code in rows["code"].to_pylist() if code)
            ok, failed = ok + rows.num_rows - bad, failed + bad
            bar.update(rows.num_rows)
            if bad:
                bar.set_postfix(failed=failed, refresh=False)
    output.close()
    return ok, failed


def engine_of(args, target: str | None) -> RayEngine:
    """--ray-address, --ray-actors, --ray-threads, --ray-batch-size and --model from the command line."""
    client_options = {"max_message_mb": args.max_message_mb, "tls": args.tls, "ca": args.ca, "cert": args.cert,
                      "key": args.key, "server_name": args.server_name, "token": os.environ.get("ENRICH_TOKEN")}
    return RayEngine(address=args.ray_address or os.environ.get("RAY_ADDRESS") or None, actors=args.ray_actors,
                     threads=args.ray_threads, batch_size=args.ray_batch_size, bundle=args.model, target=target,
                     client_options=client_options)
