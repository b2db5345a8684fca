"""The KubeEdge manifests of a release: deploy/kubeedge/*.yaml with the node's image by the name a user
chose, pinned by digest when the image was built (``tools/release.sh manifests``).

    python -m drsdtp.kubeedge.manifests OUT [--image NAME] [--digest sha256:HEX | --oci DIR]

The image is ``NAME@sha256:...`` when a digest is given, or read from an OCI image layout (``index.json``,
as buildah, umoci or ``docker buildx --output type=oci`` write it); else ``NAME:VERSION``, the tag of this
release. ``NAME`` defaults to ``$DRSDTP_IMAGE``, then to the placeholder the manifests carry. Every other
manifest is copied as it is.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Final

from drsdtp import __version__

__all__ = ["image_reference", "main", "oci_digest", "render"]

DEPLOY: Final = Path(__file__).resolve().parents[2] / "deploy" / "kubeedge"
PLACEHOLDER: Final = "ghcr.io/example/drsdtp"
DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
# A repository name (registry host and path), without tag or digest: what `docker pull` takes before ':'/'@'.
NAME: Final = re.compile(r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*")
_IMAGE_LINE: Final = re.compile(r"^(\s*(?:-\s+)?image:\s*)\S+.*$", re.MULTILINE)


def image_reference(name: str, digest: str | None, version: str = __version__) -> str:
    if not NAME.fullmatch(name):
        raise ValueError(f"--image: {name!r} is not an image name (registry/path, no tag or digest)")
    if digest is None:
        return f"{name}:{version}"
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"--digest: {digest!r} is not sha256:<64 hex digits>")
    return f"{name}@{digest}"


def oci_digest(layout: Path) -> str:
    """The digest of the one image manifest in an OCI image layout."""
    try:
        index = json.loads((layout / "index.json").read_text())
        manifests = index["manifests"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--oci: {layout} is not an OCI image layout: {exc}") from None
    if not isinstance(manifests, list) or len(manifests) != 1:
        raise ValueError(f"--oci: {layout}/index.json lists {len(manifests)} manifests, expected one")
    digest = str(manifests[0].get("digest", ""))
    if not DIGEST.fullmatch(digest):
        raise ValueError(f"--oci: {layout}/index.json: {digest!r} is not a sha256 digest")
    return digest


def render(out: Path, reference: str, source: Path = DEPLOY) -> list[Path]:
    """Writes every manifest of ``source`` to ``out`` with each ``image:`` set to ``reference``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.glob("*.yaml")):
        text = _IMAGE_LINE.sub(lambda m: m[1] + reference, path.read_text())
        target = out / path.name
        target.write_text(text)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m drsdtp.kubeedge.manifests", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("out", type=Path)
    parser.add_argument("--image", default=os.environ.get("DRSDTP_IMAGE") or PLACEHOLDER)
    pin = parser.add_mutually_exclusive_group()
    pin.add_argument("--digest")
    pin.add_argument("--oci", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    try:
        digest = oci_digest(args.oci) if args.oci is not None else args.digest
        reference = image_reference(args.image, digest)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in render(args.out, reference):
        print(path)
    print(f"image: {reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
