"""The dashboard's third-party files, fetched from the npm registry at install time, not committed.

`vendor.lock.json` pins one npm tarball the way a package-lock.json entry does (version, tarball
URL, sha512 `integrity`) and names the files to take from it. `python -m
services.gateway.dashboard.vendor` downloads the tarball with the standard library alone (no node,
no npm: the install step and the container build run it with a bare Python), refuses it unless its
digest is the pinned one, and writes the named files into `vendor/` (git-ignored). Once they are
there with a stamp of the pinned integrity, it does nothing and needs no network.

`NPM_CONFIG_REGISTRY` (npm's own variable) points it at a registry mirror; the pinned digest still
decides what is accepted. Exit status: 0 done or already there, 1 not fetched (the reason on
stderr), 2 missing with `--check`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import json
import os
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
LOCK_PATH = HERE / "vendor.lock.json"
VENDOR_DIR = HERE / "vendor"
STAMP_NAME = ".integrity"
NPM_REGISTRY = "https://registry.npmjs.org"
MAX_TARBALL_BYTES = 32 * 2**20
ATTEMPTS = 3
TIMEOUT_S = 60.0


class VendorError(Exception):
    """The pinned files could not be fetched, verified or written."""


@dataclass(frozen=True, slots=True)
class Lock:
    name: str
    version: str
    tarball: str
    integrity: str
    files: dict[str, str]  # member of the tarball -> file name in the vendor directory


def read_lock(path: Path = LOCK_PATH) -> Lock:
    document = json.loads(path.read_text(encoding="utf-8"))
    files = {str(member): str(name) for member, name in document["files"].items()}
    for name in files.values():
        if not name or "/" in name or name.startswith("."):
            raise VendorError(f"{path}: bad vendor file name {name!r}")
    return Lock(
        str(document["name"]),
        str(document["version"]),
        str(document["tarball"]),
        str(document["integrity"]),
        files,
    )


def is_installed(lock: Lock, directory: Path = VENDOR_DIR) -> bool:
    """Every pinned file is there, written from a tarball of the pinned integrity."""
    stamp = directory / STAMP_NAME
    try:
        stamped = stamp.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return stamped == lock.integrity and all((directory / n).is_file() for n in lock.files.values())


def verify(data: bytes, integrity: str) -> None:
    """Subresource-integrity check as npm does it: `sha512-<base64 digest>`."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512" or not expected:
        raise VendorError(f"unsupported integrity {integrity!r}: only sha512 is accepted")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode("ascii")
    if not hmac.compare_digest(actual, expected):
        raise VendorError(f"integrity mismatch: got sha512-{actual}, pinned {integrity}")


def tarball_url(lock: Lock, environ: dict[str, str] | None = None) -> str:
    registry = (environ if environ is not None else dict(os.environ)).get("NPM_CONFIG_REGISTRY")
    if registry and lock.tarball.startswith(NPM_REGISTRY + "/"):
        return registry.rstrip("/") + lock.tarball[len(NPM_REGISTRY) :]
    return lock.tarball


def download(url: str) -> bytes:
    last: Exception | None = None
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(2**attempt)
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                data: bytes = response.read(MAX_TARBALL_BYTES + 1)
        except (urllib.error.URLError, OSError) as error:
            last = error
            continue
        if len(data) > MAX_TARBALL_BYTES:
            raise VendorError(f"{url}: over {MAX_TARBALL_BYTES} bytes")
        return data
    raise VendorError(f"cannot download {url}: {last}")


def extract(lock: Lock, data: bytes, directory: Path) -> None:
    """Write the pinned members (regular files only) under their fixed names, each atomically;
    the stamp goes last, so an interrupted run is redone next time."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STAMP_NAME).unlink(missing_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member_name, file_name in lock.files.items():
            try:
                member = archive.getmember(member_name)
            except KeyError:
                raise VendorError(f"{lock.tarball} has no {member_name}") from None
            source = archive.extractfile(member) if member.isfile() else None
            if source is None:
                raise VendorError(f"{member_name} in {lock.tarball} is not a regular file")
            _write_atomically(directory / file_name, source.read())
    _write_atomically(directory / STAMP_NAME, (lock.integrity + "\n").encode("ascii"))


def _write_atomically(path: Path, content: bytes) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def ensure(lock: Lock, directory: Path = VENDOR_DIR) -> bool:
    """Fetch, verify and extract unless already there. True when something was fetched."""
    if is_installed(lock, directory):
        return False
    data = download(tarball_url(lock))
    verify(data, lock.integrity)
    extract(lock, data, directory)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.gateway.dashboard.vendor",
        description="Fetch the dashboard's pinned chart library from the npm registry.",
    )
    parser.add_argument("--check", action="store_true", help="only say whether it is there")
    parser.add_argument("--dest", type=Path, default=VENDOR_DIR, help="default: %(default)s")
    options = parser.parse_args(argv)
    try:
        lock = read_lock()
        if options.check:
            there = is_installed(lock, options.dest)
            print(f"{lock.name} {lock.version}: {'present' if there else 'missing'}")
            return 0 if there else 2
        fetched = ensure(lock, options.dest)
    except (VendorError, OSError, ValueError, KeyError, tarfile.TarError) as error:
        print(f"dashboard vendor: {error}", file=sys.stderr)
        return 1
    state = "fetched and verified" if fetched else "already present"
    print(f"dashboard vendor: {lock.name} {lock.version} {state} in {options.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
