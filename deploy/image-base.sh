#!/usr/bin/env bash
# The base image deploy/Dockerfile's FROM names, for podman on a machine that no container
# registry serves (docs/image.md). Run by `make image` before every podman build:
#
#   deploy/image-base.sh            # nothing to do when the tag is already in podman's storage
#
# 1. The tag is in podman's storage: done (a repeated run takes well under a second).
# 2. A registry serves it: pulled, as docker or podman would anyway.
# 3. Otherwise it is made here: a Debian root file system from the Debian mirror (mmdebstrap,
#    minbase plus Debian's own python3, python3-venv, python-is-python3 and ca-certificates, with
#    bookworm-updates and the security updates), imported with `podman import` under the tag
#    (podman names it localhost/python:...). Debian bookworm's Python is 3.11, which is what
#    python:3.11-slim-bookworm holds; there it lives in /usr/bin instead of /usr/local/bin, and has
#    no pip outside a venv. The import sets what the official image's config sets and the
#    Dockerfile relies on: PATH, LANG and CMD. The label io.bandwagon.base tells the two apart.
#
# PODMAN is the podman command (`make image` passes its flags: --storage-driver vfs --runtime
# runc); DOCKERFILE the Dockerfile whose FROM is made. Needs root, mmdebstrap and the Debian mirror.
set -euo pipefail

PODMAN=${PODMAN:-podman}
DOCKERFILE=${DOCKERFILE:-$(dirname "${BASH_SOURCE[0]}")/Dockerfile}
read -r -a podman <<<"$PODMAN"

# Every stage starts FROM the same image (a stage named by AS is not an image to make).
mapfile -t bases < <(awk 'toupper($1) == "FROM" { print $2 }' "$DOCKERFILE" | sort -u)
if [[ ${#bases[@]} -ne 1 ]]; then
  echo "image-base.sh: expected one FROM image in $DOCKERFILE, found: ${bases[*]:-none}" >&2
  exit 1
fi
tag=${bases[0]}

if "${podman[@]}" image exists "$tag"; then
  echo "base image $tag: present"
  exit 0
fi
if "${podman[@]}" pull --quiet "$tag" >/dev/null 2>&1; then
  echo "base image $tag: pulled"
  exit 0
fi

# The Debian suite whose python3 is the version the tag names.
case "$tag" in
  python:3.11-slim-bookworm | docker.io/library/python:3.11-slim-bookworm) suite=bookworm ;;
  *)
    echo "image-base.sh: no registry serves $tag, and no Debian suite is known to hold its Python" >&2
    exit 1
    ;;
esac
if ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "image-base.sh: no registry serves $tag; to make it locally, install mmdebstrap:" >&2
  echo "  apt-get install mmdebstrap" >&2
  exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/bandwagon-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "base image $tag: no registry serves it; making it from Debian $suite with mmdebstrap"
started=$SECONDS
# Like the slim images: no manuals, no documentation but the copyright files, no translations.
mmdebstrap --quiet --variant=minbase \
  --include=python3,python3-venv,python-is-python3,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  "$suite" "$work/rootfs.tar"
"${podman[@]}" import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL io.bandwagon.base=mmdebstrap-$suite" \
  --change 'CMD ["python3"]' \
  "$work/rootfs.tar" "$tag" >/dev/null
echo "base image $tag: made in $((SECONDS - started)) s"
