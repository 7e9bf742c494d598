"""Is this a Jetson, and which: the Jetson Linux (L4T) and JetPack releases, recorded in engine manifests and
benchmark results, and (when asked) the power mode and clocks, which change latency.

/etc/nv_tegra_release holds the L4T release on Jetson ("# R35 (release), REVISION: 3.1, ..." = L4T 35.3.1);
JetPack's version is the version of the `nvidia-jetpack` Debian package when it is installed. Both are read
from files; only the power mode and clocks need a command (`nvpmodel -q`, `jetson_clocks --show`). Everything is
None off Jetson.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Optional

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DPKG_STATUS = Path("/var/lib/dpkg/status")
_PROBES = ((("nvpmodel", "-q"), "power_mode"), (("jetson_clocks", "--show"), "clocks"))


def parse_nv_tegra_release(text: str) -> Optional[str]:
    """'# R36 (release), REVISION: 4.3, GCID: ...' -> '36.4.3'; None when the text has no release."""
    m = re.search(r"R(\d+)\s*\(release\)\s*,\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2).strip('.')}"


def dpkg_version(package: str, status_text: str) -> Optional[str]:
    """Version of an installed package in a dpkg status file's text."""
    for block in status_text.split("\n\n"):
        if re.search(rf"^Package:\s*{re.escape(package)}\s*$", block, re.M) and \
                re.search(r"^Status:.*\binstalled\b", block, re.M):
            m = re.search(r"^Version:\s*(\S+)", block, re.M)
            if m:
                return m.group(1)
    return None


def _run(cmd: tuple[str, ...]) -> Optional[str]:
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=5).stdout.strip()[:2000] or None
    except (OSError, subprocess.SubprocessError):
        return None


def jetson_info(probe: bool = False) -> dict:
    """{"l4t": "35.3.1" | None, "l4t_release": first line of nv_tegra_release | None, "jetpack": ... | None};
    probe=True adds "power_mode" and "clocks" (the commands' output; None off Jetson or when they fail)."""
    info: dict = {"l4t": None, "l4t_release": None, "jetpack": None}
    if probe:
        info.update(dict.fromkeys(key for _, key in _PROBES))
    try:
        text = NV_TEGRA_RELEASE.read_text(errors="replace")
    except OSError:
        return info
    info["l4t_release"] = text.strip().splitlines()[0] if text.strip() else None
    info["l4t"] = parse_nv_tegra_release(text)
    try:
        info["jetpack"] = dpkg_version("nvidia-jetpack", DPKG_STATUS.read_text(errors="replace"))
    except OSError:
        pass
    if probe:
        info.update({key: _run(cmd) for cmd, key in _PROBES})
    return info
