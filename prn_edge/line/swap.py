"""The engine a running line calls and the artefact it runs; a hot swap replaces both between two engine calls.

Every decision records the artefact that made it (CSV column `artefact`, metric prn_line_artefact_info), so the
label is read under the same lock as the engine call it names.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .engine import EngineLike, Verdicts, engine_input, run_engine, served_artefact
from .errors import LineError
from .monitor import LineMetrics

log = logging.getLogger(__name__)


def artefact_label(engine) -> str:
    """Which artefact an engine runs, for the records: file name and the first 12 hex digits of its SHA-256; for an
    engine on a server, the model version it answers with (MODEL/VERSION:FILE@SHA12)."""
    served = served_artefact(engine)
    if served:
        return served
    path = getattr(engine, "path", None)
    if path is None:
        shared = getattr(engine, "_shared", None)  # a SharedEngine client: the shared engine's artefact
        path = getattr(getattr(shared, "engine", None), "path", None)
    if path is None or not Path(path).is_file():  # a test double, a server address
        return type(engine).__name__ if path is None else Path(str(path)).name
    import hashlib

    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return f"{Path(path).name}@{h.hexdigest()[:12]}"
    except OSError:
        return Path(path).name


class EngineSlot:
    """The engine of one line and the label of its artefact. Each engine call holds the slot's lock, so a swap
    waits for the call in flight and every call knows which artefact answered it."""

    def __init__(self, engine: EngineLike, metrics: LineMetrics, line: str):
        self.engine = engine
        self.artefact = artefact_label(engine)
        self._metrics = metrics
        self._line = line
        self._lock = threading.Lock()
        self.opened = False

    def open(self) -> None:
        self.engine = self.engine.__enter__() or self.engine
        self.opened = True

    def close(self) -> None:
        """Close whichever engine is current (a hot swap changes it)."""
        with self._lock:
            self.engine.__exit__(None, None, None)

    def run(self, frames: np.ndarray) -> tuple[Verdicts, str]:
        """One engine call and the artefact that made it (a server may have rolled out another model version)."""
        with self._lock:
            verdicts = run_engine(self.engine, frames)
            rerun = getattr(self.engine, "last_rerun", 0)  # a cascade of this line's own (a shared one: not counted)
            if rerun:
                self._metrics.reference_decisions.inc(rerun)
            served = served_artefact(self.engine)
            if served and served != self.artefact:
                log.warning("line %s: %s decides now (was %s): the server rolled out another model version",
                            self._line, served, self.artefact)
                self._relabel(served)
            return verdicts, self.artefact

    def note_swap(self, label: str, engine: Optional[EngineLike] = None) -> Optional[EngineLike]:
        """Record that the engine (e.g. a shared one) now runs another artefact; with `engine`, it takes over
        between two engine calls. Returns the engine it replaced (None without one)."""
        with self._lock:
            old = self.engine if engine is not None else None
            if engine is not None:
                self.engine = engine
            self._relabel(label)
        self._metrics.engine_swaps.labels("ok").inc()
        return old

    def _relabel(self, label: str) -> None:
        """The artefact deciding from the next call on, and its metric (called with the lock held)."""
        self._metrics.artefact.labels(self.artefact).set(0)
        self.artefact = label
        self._metrics.artefact.labels(label).set(1)

    def swap(self, new: EngineLike, label: str, warm_up: Callable[[EngineLike], None]) -> dict:
        """Open `new`, check it takes the same frames and warm it up while the current engine keeps deciding;
        then it takes over between two calls and the old one is closed. A failure before that leaves the old
        engine running and raises LineError saying why. A shared engine swaps for every line sharing it."""
        if label == self.artefact:  # the same artefact (a reload that changed other keys): nothing to swap
            log.info("line %s: the engine artefact %s is unchanged; no swap", self._line, label)
            return {"from": label, "to": label, "unchanged": True}
        t0 = time.monotonic()
        opened = self._prepare(new, label, warm_up)
        t_ready = time.monotonic()
        shared = getattr(self.engine, "_shared", None)
        if shared is not None:  # a SharedEngine client: the engine every sharing line uses is swapped
            shared.take_over(opened)
            self.note_swap(label)
            return {"from": "shared", "to": label, "prepare_s": round(t_ready - t0, 3)}
        old_label = self.artefact
        old = self.note_swap(label, opened)
        try:
            old.__exit__(None, None, None)
        except Exception as e:  # the new engine runs; a failed close is only reported
            log.warning("closing the previous engine %s: %s", old_label, e)
        log.warning("line %s: hot swap %s -> %s (prepared in %.2f s)", self._line, old_label, label, t_ready - t0)
        return {"from": old_label, "to": label, "prepare_s": round(t_ready - t0, 3),
                "switch_s": round(time.monotonic() - t_ready, 4)}

    def _prepare(self, new: EngineLike, label: str, warm_up: Callable[[EngineLike], None]) -> EngineLike:
        """`new` opened, checked and warmed up; closed again, with the swap counted as failed, if it is not fit."""
        try:
            opened = new.__enter__() or new
        except Exception as e:
            self._metrics.engine_swaps.labels("failed").inc()
            raise LineError(f"hot swap to {label}: the new engine does not open ({e}); still running "
                            f"{self.artefact}") from e
        try:
            if engine_input(opened) != engine_input(self.engine):
                raise LineError(f"it takes {engine_input(opened)}, the running one {engine_input(self.engine)}; "
                                "a different input needs a restart")
            warm_up(opened)
        except Exception as e:
            opened.__exit__(None, None, None)
            self._metrics.engine_swaps.labels("failed").inc()
            raise LineError(f"hot swap to {label} refused: {e}; still running {self.artefact}") from e
        return opened
