# Two entry points do all set-up on a fresh machine:
#   make demo   - the main job on embedded defaults
#   make test   - the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

$(VENV)/.ready: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: this is the CPU wheel on our machines; anything unpinned pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[train,cpu,line,dev,triton,openvino]'
	# genicam 1.6 ships the viky.cti producer (NewestOnly, frame rate) but not TLSimu: kept beside the venv's
	# genicam 1.5 for the capture tests that load it in a subprocess
	$(PY) -m pip install -q --no-deps --target $(VENV)/genicam16 genicam==1.6.0
	# Triton's real-server tests: the tritonserver of nvidia-pytriton (it pins numpy<2, so not in the venv) and
	# numpy<2 with onnxruntime for its Python-backend stub (prn_edge.serve.triton_server finds both there)
	$(PY) -m pip install -q --no-deps --target $(VENV)/triton nvidia-pytriton==0.7.0
	$(PY) -m pip install -q --target $(VENV)/triton-stub 'numpy<2' onnxruntime
	touch $@

venv: $(VENV)/.ready

demo: $(VENV)/.ready
	$(VENV)/bin/prn-edge demo $(ARGS)

test: $(VENV)/.ready
	$(PY) -m pytest -q

.PHONY: venv demo test
