"""File helpers every stage shares: content hashes for manifests, and atomic writes so that an interrupted
export or build never leaves a half-written artefact behind."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from .errors import ConfigError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once: artefacts get the mode any new file gets (0644 under the usual umask 022), not mkstemp's 0600, so a
# line running as another user can read them.
FILE_MODE = 0o666 & ~_umask()


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write to a unique temporary file beside `path` (never a fixed name: two writers do not collide and no
    symlink is followed), fsync, give it the usual file mode, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def check_writable(path: str | Path, what: str = "", folder: bool = False) -> None:
    """`path` can be written as a file (or filled as a folder): ConfigError naming `what` (the flag or key) if not.

    Checked before the work that would fill it, so a long run does not end in a traceback at its last step.
    Nothing is created: folders on the way are made when the output is written."""
    p = Path(path)
    kind = "folder" if folder else "file"
    label = f"{what} {p}: " if what else f"{p}: "
    try:
        existing = next(a for a in (p, *p.parents) if a.exists())
    except (OSError, ValueError) as e:  # a name too long or otherwise impossible for this system
        raise ConfigError(f"{label}not a possible path ({e}); choose another") from None
    if existing == p and folder != p.is_dir():
        raise ConfigError(f"{label}a {'file' if folder else 'folder'} is there; give a {kind} path")
    if existing != p and not existing.is_dir():
        raise ConfigError(f"{label}{existing} is a file, so no {kind} can be made below it; choose another path")
    folder_to_write = existing if existing.is_dir() else existing.parent
    if not os.access(folder_to_write, os.W_OK | os.X_OK) or (existing == p and not os.access(p, os.W_OK)):
        raise ConfigError(f"{label}{existing} is not writable; choose a path you may write to")
