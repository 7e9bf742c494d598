import sys
from pathlib import Path

import pytest
import torch

# tests/<area>/ helpers import each other by module name; shared fakes live in tests/
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent / "model"))
torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
