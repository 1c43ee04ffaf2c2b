"""Artifacts in a local folder, addressed by `file://` URLs: the store of one machine (the
default), or of a fleet whose hosts share a mounted filesystem.

Writes are atomic (temp file + rename), so a retried activity never leaves half a file. A read
accepts only a `file://` URL that resolves (after `..` and symlinks) to a file under the root.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from activities.storage.artifact_refusal import ArtifactOutsideStore
from schemas.artifacts import StoredArtifact


class FolderStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root_url = root.as_uri()

    def put(self, folder: str, name: str, data: bytes) -> str:
        target_folder = self.root / folder
        target_folder.mkdir(parents=True, exist_ok=True)
        target = target_folder / name
        fd, temp = tempfile.mkstemp(dir=target_folder, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, target)
        return target.as_uri()

    def url_of(self, folder: str, name: str) -> str:
        return (self.root / folder / name).as_uri()

    def read(self, url: str) -> bytes:
        return self.path_of(url).read_bytes()

    def list(self, folder: str) -> list[StoredArtifact]:
        directory = self.root / folder
        if not directory.is_dir():
            return []
        return [
            StoredArtifact(name=path.name, url=path.as_uri(), size_bytes=path.stat().st_size)
            for path in sorted(directory.iterdir())
            if path.is_file() and not path.name.startswith(".")
        ]

    def path_of(self, url: str) -> Path:
        """The file `url` names, resolved, when it lies under the root; else
        ArtifactOutsideStore naming the URL and the root."""
        root = self.root.resolve()
        parsed = urlparse(url)
        if parsed.scheme != "file":
            scheme = repr(parsed.scheme) if parsed.scheme else "no"
            raise ArtifactOutsideStore(url, str(root), f"has {scheme} scheme")
        if parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
            raise ArtifactOutsideStore(url, str(root), "names a host, a query or a fragment")
        try:
            path = Path(unquote(parsed.path)).resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
            raise ArtifactOutsideStore(url, str(root), "is not a readable path") from None
        if root not in path.parents:
            raise ArtifactOutsideStore(url, str(root), f"resolves to {path}, outside the store")
        return path
