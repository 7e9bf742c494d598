"""prn_edge metadata in an OpenVINO IR (model.xml + model.bin): the same `prn_edge.` keys as an ONNX artefact's,
kept in the model's rt_info so that thresholds and the input spec travel inside the IR.

`prn-edge export --to openvino` writes them under <rt_info><prn_edge> (RT_INFO_SECTION). An IR that OpenVINO's own
converter (ovc, openvino.convert_model) made from one of our ONNX artefacts carries the ONNX metadata_props under
<rt_info><framework>, with the prefix: both are read. Read with the standard library, so that tools read an IR's
metadata where OpenVINO is not installed.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from .errors import MetadataError
from .metadata import PREFIX, decode_metadata, encode_metadata

RT_INFO_SECTION = "prn_edge"  # <rt_info><prn_edge><KEY value="..."/>, KEY without the prefix
_FRAMEWORK_SECTION = "framework"  # where the ONNX frontend keeps metadata_props, keys with the prefix


def weights_of(xml_path: str | Path) -> Path:
    return Path(xml_path).with_suffix(".bin")


def read_ir_metadata(xml_path: str | Path) -> dict[str, Any]:
    """prn_edge metadata of an OpenVINO IR, decoded like an ONNX artefact's (plus "input_spec").

    Raises MetadataError for a missing IR or weights file, a file that is not an IR, or an IR without prn_edge
    metadata."""
    path = Path(xml_path)
    if not path.is_file():
        raise MetadataError(f"{path} does not exist; make one with `prn-edge export CKPT --to openvino -o {path}`")
    if not weights_of(path).is_file():
        raise MetadataError(f"{path}: its weights {weights_of(path).name} are not beside it; an OpenVINO IR is the "
                            ".xml and the .bin of the same name: copy both")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise MetadataError(f"{path} is not a readable OpenVINO IR ({e}); it may be truncated: export it again "
                            "with `prn-edge export --to openvino`, or copy it again") from None
    if root.tag != "net":
        raise MetadataError(f"{path} is XML but not an OpenVINO IR (root <{root.tag}>, expected <net>)")
    props: dict[str, str] = {}
    framework = root.find(f"rt_info/{_FRAMEWORK_SECTION}")
    if framework is not None:
        props.update({e.tag: e.get("value", "") for e in framework if e.tag.startswith(PREFIX)})
    ours = root.find(f"rt_info/{RT_INFO_SECTION}")
    if ours is not None:  # written on purpose: wins over what the converter carried along
        props.update({PREFIX + e.tag: e.get("value", "") for e in ours})
    return decode_metadata(props, str(path))


def set_ir_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Encode unprefixed prn_edge values into an openvino.Model's rt_info (<rt_info><prn_edge>), as
    write_metadata does for an ONNX ModelProto; keys already there keep their place, given ones are replaced."""
    for key, value in encode_metadata(meta).items():
        model.set_rt_info(value, [RT_INFO_SECTION, key[len(PREFIX):]])
