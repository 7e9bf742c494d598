import pytest

from prn_edge.cli import main
from prn_edge.data.demo import make_dataset


@pytest.fixture(scope="package")
def trained(tmp_path_factory):
    """A tiny PRN trained on a small demo category: (checkpoint, category folder)."""
    root = tmp_path_factory.mktemp("cal")
    make_dataset(root / "data", seed=5, categories=["grass"], n_train=40, n_test_good=2, n_test_defect=1, n_shots=4,
                 size=64, progress=False)
    ckpt = root / "tiny.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(root / "data" / "grass"), "--out", str(ckpt),
                 "--quiet", "--set", "train.steps=30", "--set", "train.val_every=15"]) == 0
    return ckpt, root / "data" / "grass"


@pytest.fixture(scope="package")
def trained_with_real_shots(tmp_path_factory):
    """A tiny PRN whose training held real defect shots out for validation (7 shots per seen type, 2 of each held
    out), trained with train.num_shots=14 (not the data loader's default): (checkpoint, category folder)."""
    root = tmp_path_factory.mktemp("cal-real")
    make_dataset(root / "data", seed=6, categories=["grass"], n_train=40, n_test_good=2, n_test_defect=1, n_shots=14,
                 size=64, progress=False)
    ckpt = root / "tiny-real.pt"
    assert main(["train", "--variant", "prn-tiny", "--data", str(root / "data" / "grass"), "--out", str(ckpt),
                 "--quiet", "--set", "train.steps=30", "--set", "train.val_every=15", "--set",
                 "train.num_shots=14"]) == 0
    return ckpt, root / "data" / "grass"
