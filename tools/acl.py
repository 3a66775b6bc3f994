"""`python -m tools.acl`: write deploy/redis-users.acl (and the Kubernetes base's copy),
Bandwagon's Redis users (SPEC 4.1 rule 14), from the key schema's access table
(`libs.store.acl`); `--check` only compares (`make acl` writes them, a test checks they are up
to date)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from libs.store.acl import users_file

ROOT = Path(__file__).parents[1]
USERS_FILE = ROOT / "deploy" / "redis-users.acl"
# kustomize reads nothing outside the kustomization's folder: the base keeps its own copy
COPIES = (USERS_FILE, ROOT / "k8s" / "base" / "redis-users.acl")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.acl", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    wanted = users_file()
    if args.check:
        stale = [path for path in COPIES if path.read_text(encoding="utf-8") != wanted]
        for path in stale:
            print(f"{path} is stale: run make acl", file=sys.stderr)
        return 1 if stale else 0
    for path in COPIES:
        path.write_text(wanted, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
