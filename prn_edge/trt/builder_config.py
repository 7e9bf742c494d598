"""The builder config every build step writes into, and the one way a step sets a BuilderFlag (so the manifest
lists every flag set, and tests/trt/test_trt_api_surface.py finds every flag name the code can pass)."""
from __future__ import annotations

from typing import Any


def create_config(trt: Any, builder: Any, workspace_mb: int) -> Any:
    """A builder config with the workspace pool limited (Jetson shares memory with the CPU: keep it small)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    return config


def set_flag(trt: Any, config: Any, flags: list[str], name: str) -> None:
    """Set BuilderFlag `name` and record it in `flags`."""
    config.set_flag(getattr(trt.BuilderFlag, name))
    flags.append(name)
