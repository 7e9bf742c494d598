from pathlib import Path

import pytest

from tests.helpers.prn_artefacts import make_checkpoint, real_images


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def photos() -> list:
    return real_images(6, 96)
