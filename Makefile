# twinserve: `make demo` (set-up + the main job) and `make test` (set-up + the suite).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
# The third stack (KServe's model server running ONNX Runtime) has its own environment: kserve 0.21
# pins psutil<6 and protobuf 6, the project psutil 7 and protobuf 7. Neither pin is loosened.
KVENV  := .venv-kserve
KSTAMP := $(KVENV)/.installed-$(shell cat services/kserve/requirements.txt | sha1sum | cut -c1-12)

.PHONY: setup python java nginx chromium export test demo up down status bench compose-smoke clean

setup: python java nginx $(STAMP) $(KSTAMP)

# Python 3.11 able to make a venv (Debian splits venv/ensurepip into python3.11-venv).
python:
	@bash twinserve/ensure-python.sh $(PYTHON)

# TorchServe's frontend needs Java 17 or newer.
java:
	@bash services/torchserve/ensure-java.sh

# nginx is the reference proxy `twinserve bench --overhead` reads the gateway against (Debian's nginx-light).
nginx:
	@bash loadtests/ensure-nginx.sh

# Headless Chromium (Debian's chromium): a test opens a bench report and checks that every chart loaded.
# Only the tests need it, so `make test` installs it and `make demo` does not wait for it.
chromium:
	@bash loadtests/ensure-chromium.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@rm -f $(VENV)/.installed-*
	@touch $@

$(KSTAMP): services/kserve/requirements.txt
	@test -x $(KVENV)/bin/python || $(PYTHON) -m venv $(KVENV)
	$(KVENV)/bin/python -m pip install --quiet -r services/kserve/requirements.txt
	@rm -f $(KVENV)/.installed-*
	@touch $@

export: setup
	$(BIN)/twinserve export

test: setup chromium
	$(BIN)/python -m pytest

demo: setup
	$(BIN)/twinserve demo

up: setup
	$(BIN)/twinserve up

down:
	$(BIN)/twinserve down

status:
	$(BIN)/twinserve status

bench: setup
	$(BIN)/twinserve bench

# Build every image from a local base, run the compose stack, predict, load, tear down (see README, Docker).
compose-smoke: setup
	bash services/docker/smoke.sh

clean:
	rm -rf models/build reports .twinserve
