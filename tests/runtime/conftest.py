from pathlib import Path

import pytest

from tests.helpers.prn_artefacts import make_checkpoint, real_images


@pytest.fixture(scope="session")
def tiny_ckpt_rt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt_rt") / "tiny.pt")


@pytest.fixture(scope="session")
def photos_rt() -> list:
    return real_images(6, 96)
