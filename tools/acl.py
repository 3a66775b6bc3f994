"""`python -m tools.acl`: write deploy/redis-users.acl, Bandwagon's Redis users (SPEC 4.1 rule
14), from the key schema's access table (`libs.store.acl`); `--check` only compares (`make acl`
writes it, a test checks it is up to date)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from libs.store.acl import users_file

USERS_FILE = Path(__file__).parents[1] / "deploy" / "redis-users.acl"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.acl", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the file is stale")
    args = parser.parse_args(argv)
    wanted = users_file()
    if args.check:
        if USERS_FILE.read_text(encoding="utf-8") != wanted:
            print(f"{USERS_FILE} is stale: run make acl", file=sys.stderr)
            return 1
        return 0
    USERS_FILE.write_text(wanted, encoding="utf-8")
    print(f"wrote {USERS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
