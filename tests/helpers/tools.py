"""The scripts under tools/ as modules: some have no .py suffix (tools/gpu_check), so they load by path."""
import importlib.machinery
import importlib.util
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def load_tool(name: str):
    """tools/<name> executed as a fresh module named `<name>_tool` (its main() is not run)."""
    loader = importlib.machinery.SourceFileLoader(f"{Path(name).stem}_tool", str(TOOLS / name))
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(mod)
    return mod
