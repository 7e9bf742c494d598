"""Fixtures with real peers for the line tests: a demo dataset category, the TLSimu GenTL producer, a Modbus TCP
server on 127.0.0.1 that records writes, and a GenICam node map with digital-output nodes over a recording port."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

# A GenICam device description with only the SFNC digital-output nodes; selector-indexed registers, no cache,
# so every node write is one register write on the port.
IO_XML = """<?xml version="1.0" encoding="utf-8"?>
<RegisterDescription ModelName="PrnEdgeIoStandIn" VendorName="prn_edge" ToolTip="prn_edge test stand-in: SFNC digital I/O nodes only"
  StandardNameSpace="None" SchemaMajorVersion="1" SchemaMinorVersion="1" SchemaSubMinorVersion="0"
  MajorVersion="1" MinorVersion="0" SubMinorVersion="0"
  ProductGuid="7a1c0d2e-3b4f-4c5d-8e9f-0a1b2c3d4e5f" VersionGuid="8b2d1e3f-4c5a-4d6e-9f0a-1b2c3d4e5f60"
  xmlns="http://www.genicam.org/GenApi/Version_1_1"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.genicam.org/GenApi/Version_1_1 http://www.genicam.org/GenApi/GenApiSchema_Version_1_1.xsd">
  <Category Name="Root" NameSpace="Standard">
    <pFeature>DigitalIOControl</pFeature>
  </Category>
  <Category Name="DigitalIOControl" NameSpace="Standard">
    <pFeature>LineSelector</pFeature>
    <pFeature>LineMode</pFeature>
    <pFeature>LineSource</pFeature>
    <pFeature>UserOutputSelector</pFeature>
    <pFeature>UserOutputValue</pFeature>
  </Category>
  <Enumeration Name="LineSelector" NameSpace="Standard">
    <EnumEntry Name="Line0"><Value>0</Value></EnumEntry>
    <EnumEntry Name="Line1"><Value>1</Value></EnumEntry>
    <EnumEntry Name="Line2"><Value>2</Value></EnumEntry>
    <pValue>LineSelectorReg</pValue>
    <pSelected>LineMode</pSelected>
    <pSelected>LineSource</pSelected>
  </Enumeration>
  <IntReg Name="LineSelectorReg">
    <Address>0x0</Address><Length>4</Length><AccessMode>RW</AccessMode><pPort>Device</pPort>
    <Cachable>NoCache</Cachable><Sign>Unsigned</Sign><Endianess>LittleEndian</Endianess>
  </IntReg>
  <Enumeration Name="LineMode" NameSpace="Standard">
    <EnumEntry Name="Input"><Value>0</Value></EnumEntry>
    <EnumEntry Name="Output"><Value>1</Value></EnumEntry>
    <pValue>LineModeReg</pValue>
  </Enumeration>
  <IntReg Name="LineModeReg">
    <Address>0x100</Address><pIndex Offset="4">LineSelectorReg</pIndex><Length>4</Length><AccessMode>RW</AccessMode>
    <pPort>Device</pPort><Cachable>NoCache</Cachable><Sign>Unsigned</Sign><Endianess>LittleEndian</Endianess>
  </IntReg>
  <Enumeration Name="LineSource" NameSpace="Standard">
    <EnumEntry Name="Off"><Value>0</Value></EnumEntry>
    <EnumEntry Name="UserOutput1"><Value>1</Value></EnumEntry>
    <EnumEntry Name="UserOutput2"><Value>2</Value></EnumEntry>
    <pValue>LineSourceReg</pValue>
  </Enumeration>
  <IntReg Name="LineSourceReg">
    <Address>0x200</Address><pIndex Offset="4">LineSelectorReg</pIndex><Length>4</Length><AccessMode>RW</AccessMode>
    <pPort>Device</pPort><Cachable>NoCache</Cachable><Sign>Unsigned</Sign><Endianess>LittleEndian</Endianess>
  </IntReg>
  <Enumeration Name="UserOutputSelector" NameSpace="Standard">
    <EnumEntry Name="UserOutput1"><Value>1</Value></EnumEntry>
    <EnumEntry Name="UserOutput2"><Value>2</Value></EnumEntry>
    <pValue>UserOutputSelectorReg</pValue>
    <pSelected>UserOutputValue</pSelected>
  </Enumeration>
  <IntReg Name="UserOutputSelectorReg">
    <Address>0x300</Address><Length>4</Length><AccessMode>RW</AccessMode><pPort>Device</pPort>
    <Cachable>NoCache</Cachable><Sign>Unsigned</Sign><Endianess>LittleEndian</Endianess>
  </IntReg>
  <Boolean Name="UserOutputValue" NameSpace="Standard">
    <pValue>UserOutputValueReg</pValue><OnValue>1</OnValue><OffValue>0</OffValue>
  </Boolean>
  <IntReg Name="UserOutputValueReg">
    <Address>0x400</Address><pIndex Offset="4">UserOutputSelectorReg</pIndex><Length>4</Length><AccessMode>RW</AccessMode>
    <pPort>Device</pPort><Cachable>NoCache</Cachable><Sign>Unsigned</Sign><Endianess>LittleEndian</Endianess>
  </IntReg>
  <Port Name="Device" NameSpace="Standard"/>
</RegisterDescription>
"""


def tlsimu_path() -> Path:
    try:
        import genicam
    except ImportError:
        pytest.skip("genicam is not installed (pip install '.[line]')")
    cti = Path(genicam.__file__).parent / "TLSimu.cti"
    if not cti.is_file():
        pytest.skip(f"this genicam wheel has no TLSimu.cti ({genicam.__file__}); genicam 1.5.0 on x86_64 ships it")
    return cti


@pytest.fixture(scope="session")
def tlsimu() -> str:
    return str(tlsimu_path())


def oracle(category: Path):
    """score_fn of an engine that knows the ground truth: 1.0 for defect images, 0.0 for good ones (and for
    the warm-up's blank frames)."""
    from prn_edge.data.dataset import load_category
    from prn_edge.data.images import read_image

    truth = {hashlib.sha1(read_image(s.image).tobytes()).digest(): float(s.label)
             for s in load_category(category, num_shots=0).test}
    return lambda frame: truth.get(hashlib.sha1(frame.tobytes()).digest(), 0.0)


@pytest.fixture(scope="session")
def truth(demo_category):
    return oracle(demo_category)


@pytest.fixture(scope="session")
def demo_category(tmp_path_factory) -> Path:
    """A small demo category (64 px): 6 good test images and one of each defect type."""
    from prn_edge.data.demo import make_dataset

    root = tmp_path_factory.mktemp("demo")
    make_dataset(root, categories=["grass"], n_train=4, n_test_good=6, n_test_defect=1, n_shots=0, size=64,
                 progress=False)
    return root / "grass"


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, demo_category):
    """A prn-tiny model fitted on the demo category's train images, exported with uint8 64x64 RGB input."""
    from prn_edge.sim.line_bench import tiny_onnx_model

    return tiny_onnx_model(demo_category, tmp_path_factory.mktemp("onnx"))


from prn_edge.sim.plc import SimulatedPlc as ModbusRecorder, free_port  # noqa: E402


@pytest.fixture()
def dead_port() -> int:
    """A loopback port nobody listens on."""
    return free_port()


@pytest.fixture()
def modbus_server():
    server = ModbusRecorder().start()
    yield server
    server.stop()


class RecordingPort:
    """A genicam.genapi AbstractPort over a dict of registers that records every write."""

    def __new__(cls):
        from genicam import genapi

        class _Port(genapi.AbstractPort):
            def __init__(self):
                super().__init__()
                self.memory: dict[int, bytes] = {}
                self.writes: list[tuple[float, int, int]] = []  # (time, address, little-endian value)

            def is_open(self):
                return True

            def get_access_mode(self):
                return genapi.EAccessMode.RW

            def read(self, address, length):
                return bytes(self.memory.get(address, bytes(length)))[:length]

            def write(self, address, value):
                value = bytes(value)
                self.memory[address] = value
                self.writes.append((time.monotonic(), address, int.from_bytes(value, "little")))

            def open(self, port):
                pass

            def close(self):
                pass

        return _Port()


def make_io_camera():
    """(node map, recording port) of a stand-in camera that has only the SFNC digital I/O nodes."""
    try:
        from genicam import genapi
    except ImportError:
        pytest.skip("genicam is not installed (pip install '.[line]')")
    node_map = genapi.NodeMap()
    node_map.load_xml_from_string(IO_XML)
    port = RecordingPort()
    node_map.connect(port, "Device")
    return node_map, port


@pytest.fixture()
def io_camera():
    return make_io_camera()


@pytest.fixture()
def io_camera_factory():
    return make_io_camera
