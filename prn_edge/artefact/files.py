"""File helpers every stage shares: content hashes for manifests, and atomic writes so that an interrupted
export or build never leaves a half-written artefact behind."""
from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_sha256(paths: list[Path]) -> str:
    """One hash over names and bytes of a file set: identifies the training data in the checkpoint."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: p.name):
        h.update(p.name.encode())
        h.update(Path(p).read_bytes())
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


def write_json(path: str | Path, obj: Any) -> Path:
    """Write obj as strict JSON (numpy values, paths and dataclasses converted; NaN/inf -> null), atomically:
    a crash never leaves half a results file."""
    p = Path(path)
    write_atomic(p, (json.dumps(plain(obj), indent=2, allow_nan=False) + "\n").encode())
    return p


def plain(o: Any) -> Any:
    """obj made of JSON types only."""
    if isinstance(o, dict):
        return {str(plain(k)) if not isinstance(k, str) else k: plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple, set)):
        return [plain(v) for v in o]
    if isinstance(o, np.ndarray):
        return plain(o.tolist())
    if isinstance(o, np.generic):
        return plain(o.item())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, Path):
        return str(o)
    if is_dataclass(o) and not isinstance(o, type):
        return plain(asdict(o))
    return o


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
