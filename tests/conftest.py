import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A trained prn-tiny checkpoint (64x64, real photos) shared by the export, runtime and TensorRT tests."""
    from tests.helpers.prn_artefacts import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def photos() -> list:
    """Six real photos, 96x96 RGB."""
    from tests.helpers.prn_artefacts import real_images

    return real_images(6, 96)
