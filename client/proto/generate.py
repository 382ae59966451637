"""Regenerate lmrec/v1/*_pb2*.py from client/proto/lmrec/v1/*.proto (run after editing the .proto).

    python client/proto/generate.py

The generated modules are committed so an install needs no code generation; a unit test fails when
they are stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent.parent


def generate(out_dir: Path = REPO_ROOT) -> list[Path]:
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_dir}",
                        f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", *protos])
    if code != 0:
        raise SystemExit(f"protoc failed with code {code}")
    return sorted((out_dir / "lmrec" / "v1").glob("*_pb2*.py*"))


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_ROOT):
        print(path)
