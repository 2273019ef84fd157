"""Generate the Python gRPC code from protos/ (run after editing a .proto; a test fails when stale).

    python protos/generate.py          # rewrite clients/python/enrich/v1/
    python protos/generate.py --check  # exit 1 if it differs from a fresh generation

protos/google/api/ holds googleapis' annotations.proto and http.proto (the HTTP mapping), unchanged,
so that protoc and other languages' loaders (Node's proto-loader) find them beside ours.

The generated package lives in the client distribution (clients/python), which installs on its own; the
whole project installs the same folder, so there is one copy.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parent
OUTPUT = PROTOS.parent / "clients" / "python"
DESCRIPTOR_SET = "enrich_descriptor_set.binpb"
GENERATED = ("enrich_pb2.py", "enrich_pb2.pyi", "enrich_pb2_grpc.py", DESCRIPTOR_SET)


def generate(out: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.glob("enrich/**/*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    (out / "enrich/v1").mkdir(parents=True, exist_ok=True)
    code = protoc.main([
        "protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={out}", f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        # The descriptors with their comments, for server reflection: `grpcurl describe` then shows the
        # proto's documentation (the generated Python modules carry descriptors without it).
        f"--descriptor_set_out={out / 'enrich/v1' / DESCRIPTOR_SET}", "--include_source_info", *sources,
    ])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def stale_files() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return [name for name in GENERATED
                if not (OUTPUT / "enrich/v1" / name).is_file()
                or not filecmp.cmp(Path(tmp) / "enrich/v1" / name, OUTPUT / "enrich/v1" / name, shallow=False)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the generated code is current")
    args = parser.parse_args()
    if args.check:
        stale = stale_files()
        if stale:
            print(f"stale generated code: {stale}; run python protos/generate.py", file=sys.stderr)
            return 1
        print("generated code is current")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for name in GENERATED:
            shutil.copyfile(Path(tmp) / "enrich/v1" / name, OUTPUT / "enrich/v1" / name)
    print(f"wrote {', '.join(GENERATED)} to {OUTPUT / 'enrich/v1'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
