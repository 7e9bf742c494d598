from pathlib import Path

import pytest

from tests.helpers.prn_artefacts import make_checkpoint


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    """A real tiny PRN (prototypes fitted on photos, distance map fused), exported with a batch of 1."""
    from prn_edge.export.onnx_export import export_onnx

    d = tmp_path_factory.mktemp("artefact")
    export_onnx(make_checkpoint(d / "tiny.pt"), d / "tiny.onnx", batch=1)
    return d / "tiny.onnx"
