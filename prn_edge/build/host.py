"""What the build host is, beyond TensorRT and the GPU: Jetson Linux (L4T) and JetPack releases.

/etc/nv_tegra_release holds the L4T release on Jetson ("# R35 (release), REVISION: 3.1, ..." = L4T 35.3.1);
JetPack's version is the version of the `nvidia-jetpack` Debian package when it is installed. Both are read
from files (no subprocess), and both are None off Jetson.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")
DPKG_STATUS = Path("/var/lib/dpkg/status")


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


def jetson_info() -> dict:
    """{"l4t": "35.3.1" | None, "l4t_release": first line of nv_tegra_release | None, "jetpack": ... | None}."""
    info: dict = {"l4t": None, "l4t_release": None, "jetpack": None}
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
    return info
