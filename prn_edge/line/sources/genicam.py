"""GenICam cameras through harvesters (any GenTL producer .cti).

A fetch thread polls for buffers (harvesters' own wait holds the GIL, so it polls without waiting and sleeps in
between) and copies each into a bounded FrameQueue (the buffer goes straight back to the producer), stamped
with the host receive time. Trigger modes: "off" (free run), "software" (the source triggers, at
trigger_rate_hz or on each grab; a trigger without a frame is a part without a frame), "hardware" (a line input
triggers; frame ids count parts). buffer_mode "newest" keeps only the latest frame (StreamBufferHandlingMode =
NewestOnly where the producer has it, a one-frame queue otherwise). A camera that fails is reconnected with
exponential backoff; while it is down the source reports unhealthy (the PLC heartbeat stops).
"""
from __future__ import annotations

import glob
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .. import registry
from ..errors import CameraError, CameraTimeout, CorruptFrame, LineConfigError
from .base import Frame, FrameQueue, FrameSource, Pacer
from .pixels import SUPPORTED, channels_of, to_frame

log = logging.getLogger(__name__)

TRIGGERS = ("off", "software", "hardware")
POLL_MIN_S = 0.0002  # buffer poll interval right after a frame or trigger; doubles while idle up to poll_max_s
# Software trigger: once the triggered frame is in, no frame is due until the next trigger (which wakes the poll
# at once); poll this slowly meanwhile, only to clear frames nobody triggered. Each poll holds the GIL for about
# 0.1-0.2 ms inside the producer, stalling every other thread of the line.
TRIGGERED_IDLE_POLL_S = 0.01
BUFFER_MODES = ("all", "newest")
GENTL_ENV = "GENICAM_GENTL64_PATH"


def find_producers(cti: str = "") -> list[str]:
    """The .cti files to load: the given one, or every .cti in the folders of GENICAM_GENTL64_PATH."""
    if cti:
        if not Path(cti).is_file():
            raise LineConfigError(f"source.genicam.cti={cti!r} does not exist; give the path of the camera "
                                  f"vendor's GenTL producer (.cti) or set {GENTL_ENV}")
        return [str(cti)]
    found = []
    for folder in filter(None, os.environ.get(GENTL_ENV, "").split(os.pathsep)):
        found += sorted(glob.glob(os.path.join(folder, "*.cti")))
    if not found:
        raise LineConfigError(f"no GenTL producer: set source.genicam.cti to a .cti file, or {GENTL_ENV} to folders "
                              "holding one (installed with the camera vendor's SDK)")
    return found


def _harvester(ctis: list[str]):
    try:
        from harvesters.core import Harvester
    except ImportError:
        raise CameraError("harvesters is not installed; install the line extra: pip install '.[line]' in the "
                          "prn-edge source folder") from None
    h = Harvester()
    for c in ctis:
        try:
            h.add_file(c, check_existence=True, check_validity=True)
        except Exception as e:
            h.reset()
            raise CameraError(f"GenTL producer {c} cannot be loaded ({e.__class__.__name__}: {e}); is it built for "
                              "this CPU and OS?") from None
    h.update()
    return h


def _describe(info: Any) -> dict:
    keys = ("vendor", "model", "serial_number", "id_", "user_defined_name", "tl_type", "access_status")
    return {k.rstrip("_"): getattr(info, k, None) for k in keys}


# The features an integrator checks first: what the config's source.genicam keys can set on this camera.
FEATURES = ("Width", "Height", "PixelFormat", "ExposureTime", "TriggerMode", "TriggerSource", "AcquisitionFrameRate",
            "LineSelector", "UserOutputSelector")


def list_devices(cti: str = "", features: bool = False) -> list[dict]:
    """Cameras the producers see: vendor, model, serial_number, id, user_defined_name, tl_type, access_status;
    with `features`, each camera is opened and its main features read (value and allowed values; None where the
    camera has no such node)."""
    h = _harvester(find_producers(cti))
    try:
        devices = [_describe(d) for d in h.device_info_list]
        if features:
            for i, d in enumerate(devices):
                d["features"] = _read_features(h, i)
        return devices
    finally:
        h.reset()


def _read_features(h: Any, index: int) -> dict:
    try:
        ia = h.create(index)
    except Exception as e:  # busy (opened by another program) or gone
        return {"error": f"cannot open: {e.__class__.__name__}: {e}"}
    try:
        nm = ia.remote_device.node_map
        out: dict = {}
        for name in FEATURES:
            if not hasattr(nm, name):
                out[name] = None
                continue
            node = getattr(nm, name)
            entry: dict = {}
            try:
                entry["value"] = node.value
            except Exception:
                entry["value"] = "(not readable)"
            if hasattr(node, "symbolics"):
                entry["allowed"] = list(node.symbolics)
            elif hasattr(node, "min") and hasattr(node, "max"):
                try:
                    entry["range"] = [node.min, node.max]
                except Exception:
                    pass
            out[name] = entry
        return out
    finally:
        ia.destroy()


def set_node(node_map: Any, name: str, value: Any, key: str) -> None:
    """node = value, with errors naming the node, the config key and what the camera allows."""
    if not hasattr(node_map, name):
        raise CameraError(f"the camera has no {name} node, so source.genicam.{key}={value!r} cannot be applied; "
                          f"remove {key} from the config")
    node = getattr(node_map, name)
    try:
        node.value = value
    except Exception as e:
        allowed = ""
        if hasattr(node, "symbolics"):
            allowed = f"allowed: {list(node.symbolics)}"
        elif hasattr(node, "min") and hasattr(node, "max"):
            try:
                allowed = f"allowed: {node.min}..{node.max}" + (f" in steps of {node.inc}" if hasattr(node, "inc") else "")
            except Exception:
                pass
        raise LineConfigError(f"source.genicam.{key}={value!r}: the camera's {name} node refuses it "
                              f"({e.__class__.__name__}); {allowed}") from None


@dataclass
class GenicamOptions:
    """source.genicam: a GenICam camera through a GenTL producer."""
    cti: str = ""  # empty: every .cti in GENICAM_GENTL64_PATH
    serial: str = ""
    model: str = ""
    index: int = 0
    width: int = 0  # 0 = leave the camera's setting
    height: int = 0
    pixel_format: str = ""
    exposure_us: float = 0.0
    trigger: str = "off"  # off | software | hardware
    trigger_source: str = "Line0"
    trigger_rate_hz: float = 0.0  # software trigger: parts per second (0 = trigger on each grab)
    buffer_mode: str = "all"  # all | newest
    queue_size: int = 8
    max_age_s: float = 0.0  # frames older than this are discarded (0 = no limit)
    num_buffers: int = 8
    reconnect_max_s: float = 5.0
    poll_max_s: float = 0.002  # longest pause between buffer polls while idle (latency vs CPU)
    frame_rate_hz: float = 0.0  # free run (trigger off): AcquisitionFrameRate (0 = the camera's setting)


_G = GenicamOptions


class GenicamSource(FrameSource):
    name = "genicam"

    def __init__(self, cti: str = _G.cti, serial: str = _G.serial, model: str = _G.model, index: int = _G.index,
                 width: int = _G.width, height: int = _G.height, pixel_format: str = _G.pixel_format,
                 exposure_us: float = _G.exposure_us, trigger: str = _G.trigger,
                 trigger_source: str = _G.trigger_source, trigger_rate_hz: float = _G.trigger_rate_hz,
                 buffer_mode: str = _G.buffer_mode, queue_size: int = _G.queue_size, max_age_s: float = _G.max_age_s,
                 num_buffers: int = _G.num_buffers, reconnect_max_s: float = _G.reconnect_max_s,
                 poll_max_s: float = _G.poll_max_s, frame_rate_hz: float = _G.frame_rate_hz):
        """poll_max_s: longest pause between buffer polls while no frame comes (the frame latency it may add
        in free run or with hardware triggers; software triggers wake the poll at once)."""
        if trigger not in TRIGGERS:
            raise LineConfigError(f"source.genicam.trigger={trigger!r} is not allowed; choose one of {list(TRIGGERS)}")
        if buffer_mode not in BUFFER_MODES:
            raise LineConfigError(f"source.genicam.buffer_mode={buffer_mode!r} is not allowed; choose one of "
                                  f"{list(BUFFER_MODES)}")
        if pixel_format and pixel_format not in SUPPORTED:
            raise LineConfigError(f"source.genicam.pixel_format={pixel_format!r} is not supported; choose one of "
                                  f"{list(SUPPORTED)}")
        self.cti, self.serial, self.model, self.index = cti, serial, model, index
        self.width, self.height, self.pixel_format, self.exposure_us = width, height, pixel_format, exposure_us
        self.trigger, self.trigger_source, self.trigger_rate_hz = trigger, trigger_source, trigger_rate_hz
        self.buffer_mode, self.num_buffers, self.reconnect_max_s = buffer_mode, num_buffers, reconnect_max_s
        self.poll_max_s = max(POLL_MIN_S, poll_max_s)
        if frame_rate_hz < 0 or (frame_rate_hz and trigger != "off"):
            raise LineConfigError(f"source.genicam.frame_rate_hz={frame_rate_hz}: a free-run rate (trigger off) > 0, "
                                  "or 0 for the camera's own setting")
        self.frame_rate_hz = frame_rate_hz
        self._wake = threading.Event()
        self.counts_parts = trigger == "hardware"
        self._queue = FrameQueue(1 if buffer_mode == "newest" else queue_size, max_age_s)
        self._h = None
        self._ia = None
        self._selector: dict = {}
        self._running = False
        self._thread: Optional[threading.Thread] = None
        self._connected = threading.Event()
        self._lock = threading.RLock()
        self._pacer: Optional[Pacer] = None
        self._geometry = (0, 0, 0)
        self.id_offset = 0  # added to camera frame ids after a reconnect, so ids keep increasing
        self._last_id = -1
        self._new_epoch = False
        self.reconnects = 0
        self._down_s = 0.0
        self._fail_requested = False
        self.stream_newest_only = False  # the producer does NewestOnly itself

    # ------------------------------------------------------------------ device
    @property
    def node_map(self) -> Any:
        """The camera's GenICam node map (e.g. for its digital outputs); valid while connected."""
        if self._ia is None:
            raise CameraError("the camera is not connected")
        return self._ia.remote_device.node_map

    def _select(self) -> dict:
        infos = self._h.device_info_list
        if not infos:
            raise CameraError(f"no camera found by the GenTL producer(s) {find_producers(self.cti)}; check cabling, "
                              "power and network, and run `prn-edge list-cameras`")
        for key, want in (("serial_number", self.serial), ("model", self.model)):
            if want:
                matches = [i for i in infos if getattr(i, key, None) == want]
                if not matches:
                    raise CameraError(f"no camera with {key}={want!r}; found: {[_describe(i) for i in infos]}")
                return {key: want} if key == "serial_number" else {"serial_number": matches[0].serial_number}
        if not 0 <= self.index < len(infos):
            raise LineConfigError(f"source.genicam.index={self.index}: only {len(infos)} camera(s) found")
        return {"serial_number": infos[self.index].serial_number}

    def _configure(self, nm: Any) -> None:
        if self.trigger == "off" and hasattr(nm, "TriggerMode"):
            set_node(nm, "TriggerMode", "Off", "trigger")
        if self.pixel_format:
            set_node(nm, "PixelFormat", self.pixel_format, "pixel_format")
        if self.width:
            set_node(nm, "Width", self.width, "width")
        if self.height:
            set_node(nm, "Height", self.height, "height")
        if self.exposure_us:
            set_node(nm, "ExposureTime", float(self.exposure_us), "exposure_us")
        if self.frame_rate_hz:
            if hasattr(nm, "AcquisitionFrameRateEnable"):
                set_node(nm, "AcquisitionFrameRateEnable", True, "frame_rate_hz")
            set_node(nm, "AcquisitionFrameRate", float(self.frame_rate_hz), "frame_rate_hz")
        if self.trigger != "off":
            set_node(nm, "TriggerMode", "On", "trigger")
            set_node(nm, "TriggerSource", "Software" if self.trigger == "software" else self.trigger_source,
                     "trigger_source")
        fmt = str(nm.PixelFormat.value)
        if fmt not in SUPPORTED:
            raise LineConfigError(f"the camera delivers {fmt}, which the line cannot convert; set "
                                  f"source.genicam.pixel_format to one of {list(SUPPORTED)}")
        self._geometry = (int(nm.Height.value), int(nm.Width.value), channels_of(fmt))

    def _connect(self) -> None:
        ia = self._h.create(self._selector)
        try:
            self._configure(ia.remote_device.node_map)
            ia.num_buffers = max(5, self.num_buffers)
            # The producer's event wait holds the GIL for its whole timeout, stalling every other thread of the
            # line; so wait 0 ms and sleep between polls in Python (the GIL is free while sleeping).
            ia.timeout_period_on_update_event_data_call = 0
            stream = ia.data_streams[0].node_map if ia.data_streams else None
            if stream is not None and hasattr(stream, "StreamBufferHandlingMode"):
                mode = "NewestOnly" if self.buffer_mode == "newest" else "OldestFirst"
                try:
                    stream.StreamBufferHandlingMode.value = mode
                    self.stream_newest_only = mode == "NewestOnly"
                except Exception as e:
                    log.info("producer refuses StreamBufferHandlingMode=%s (%s); emulated", mode, e)
            ia.start()
        except BaseException:
            ia.destroy()
            raise
        self._ia = ia
        self._connected.set()

    def _disconnect(self) -> None:
        self._connected.clear()
        ia, self._ia = self._ia, None
        if ia is not None:
            try:
                ia.stop()
            except Exception:
                pass
            try:
                ia.destroy()
            except Exception:
                pass

    def open(self) -> None:
        self._h = _harvester(find_producers(self.cti))
        try:
            self._selector = self._select()
            self._connect()
        except BaseException:
            self._h.reset()
            self._h = None
            raise
        self._pacer = Pacer(self.trigger_rate_hz) if self.trigger == "software" else None
        self._running = True
        self._thread = threading.Thread(target=self._fetch_loop, name="line-genicam", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        with self._lock:
            self._disconnect()
        if self._h is not None:
            self._h.reset()
            self._h = None

    def geometry(self) -> tuple[int, int, int]:
        return self._geometry

    @property
    def healthy(self) -> bool:
        return self._connected.is_set()

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    def fail(self, down_s: float = 0.2) -> None:
        """Drop the connection as a cable pull would (tests, maintenance); the fetch thread reconnects after
        the cable has been out for `down_s` seconds."""
        self._down_s = down_s
        self._fail_requested = True

    # ------------------------------------------------------------------ frames
    def _fetch_loop(self) -> None:
        from genicam.gentl import TimeoutException

        backoff = 0.1
        idle = POLL_MIN_S
        # software trigger: poll fast only while a triggered frame is outstanding
        outstanding = self.trigger != "software"
        while self._running:
            if self._fail_requested:
                self._fail_requested = False
                with self._lock:
                    self._disconnect()
                time.sleep(self._down_s)  # the cable is out: triggers in this gap get no frame
            if not self._connected.is_set():
                try:
                    with self._lock:
                        self._connect()
                    self.reconnects += 1
                    self._new_epoch = True
                    backoff = 0.1
                    log.warning("camera %s reconnected", self._selector)
                except Exception as e:
                    log.warning("camera %s reconnect failed (%s); next try in %.1f s", self._selector, e, backoff)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, self.reconnect_max_s)
                continue
            ia = self._ia  # only this thread connects and disconnects, so ia stays valid during the fetch
            try:
                buffer = ia.try_fetch(timeout=1e-4)
                if buffer is None:
                    # Poll fast right after a frame or a trigger, slower (up to poll_max_s) while idle.
                    if self._wake.wait(idle if outstanding else TRIGGERED_IDLE_POLL_S):
                        self._wake.clear()
                        idle = POLL_MIN_S
                        outstanding = True
                    elif outstanding:
                        idle = min(idle * 2, self.poll_max_s)
                    continue
                idle = POLL_MIN_S
                outstanding = self.trigger != "software" or self._wake.is_set()
                with buffer:
                    host_ts = time.monotonic()
                    frame = self._to_frame(buffer, host_ts)
                self._queue.put(frame)
                if not outstanding and self._wake.wait(TRIGGERED_IDLE_POLL_S):
                    # Software trigger: the frame is delivered and none is due before the next trigger. Polling
                    # at once would hold the GIL in the producer just when the line wants to process the frame.
                    self._wake.clear()
                    outstanding = True
                continue
            except TimeoutException:
                continue
            except CorruptFrame as e:
                log.warning("%s", e)
                continue
            except Exception as e:
                if not self._running:
                    return
                log.warning("ALARM camera %s failed (%s: %s); reconnecting", self._selector, e.__class__.__name__, e)
                with self._lock:
                    self._disconnect()
                continue

    def _to_frame(self, buffer: Any, host_ts: float) -> Frame:
        c = buffer.payload.components[0]
        raw_id = int(buffer.frame_id)
        if self._new_epoch:  # ids restart with a new connection: continue after the last one
            self.id_offset = self._last_id + 1 - raw_id
            self._new_epoch = False
        frame_id = raw_id + self.id_offset
        self._last_id = frame_id
        image = to_frame(c.data, int(c.width), int(c.height), str(c.data_format))
        return Frame(image, frame_id, host_ts=host_ts, camera_ts=int(buffer.timestamp))

    def grab(self, timeout: float) -> Frame:
        if self.trigger != "software":
            return self._queue.get(timeout)
        if self._pacer is not None and self._pacer.period:
            t = self._pacer.wait_next(timeout)
            if t is None:
                raise CameraTimeout(f"no trigger due within {timeout:.3f} s")
        self._queue.clear()  # a frame left from an earlier trigger would be matched to the wrong part
        t_trigger = time.monotonic()
        try:
            with self._lock:
                if self._ia is None:
                    raise CameraError("camera disconnected")
                self._ia.remote_device.node_map.TriggerSoftware.execute()
            self._wake.set()
            frame = self._queue.get(timeout)
        except CameraError as e:
            raise CameraTimeout(f"software trigger at {t_trigger:.3f} got no frame: {e}", part_expected=True,
                                t_expected=t_trigger) from None
        except Exception as e:
            raise CameraTimeout(f"software trigger failed: {e}", part_expected=True, t_expected=t_trigger) from None
        frame.trigger_ts = t_trigger
        return frame


registry.source("genicam", GenicamOptions, lambda o, ctx: GenicamSource(**registry.kwargs(o)), paths=("cti",))
