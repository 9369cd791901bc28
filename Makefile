# gguf-runtime — the two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROMPT ?= The three primary colours are

.PHONY: setup dev run test models fetch models-all browser warmup bench clean fuzz

# What running a model needs (~15 s of `make run` on a fresh machine); the test tools come with `make test`
# (`dev`: pytest, hypothesis, the openai client, selenium...; another ~11 s).
setup: $(VENV)/.installed

# pip is upgraded only where it is too old for an editable pyproject install (PEP 660, pip 21.3). pip's own
# byte-compiling is serial (6 s here), so it is off and `compileall` does it on every core, tests excluded
# (~2 s). It must be done: where PYTHONDONTWRITEBYTECODE is set (as on these machines), Python never writes
# bytecode itself, and every process would compile numba from source again (`import numba` 0.9-1.2 s, against
# 0.27 s). A file that does not compile is left to Python: bytecode only saves time.
BYTECODE = $(BIN)/python -m compileall -qq -j0 -x '/tests?/' \
	"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" gguf_runtime || true

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c 'import sys, pip; sys.exit(tuple(map(int, pip.__version__.split(".")[:2])) < (21, 3))' \
		|| $(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --no-compile --disable-pip-version-check -e .
	$(BYTECODE)
	touch $@

dev: $(VENV)/.dev-installed

$(VENV)/.dev-installed: $(VENV)/.installed pyproject.toml
	$(BIN)/python -m pip install -q --no-compile --disable-pip-version-check -e '.[dev]'
	$(BYTECODE)
	touch $@

# Fetch the default model, then compile the kernels of its matrix types only (Q4_1, Q8_0; ~20 s, cached in
# ~/.cache/gguf-runtime/numba): other types compile on first use.
models: setup
	$(BIN)/python scripts/fetch_models.py smollm2-135m
	$(BIN)/gguf-runtime warmup smollm2-135m

# The default model's download needs only the standard library and pip, so `make run` starts it beside the
# install where the system Python has pip (elsewhere `models` fetches it after the install).
fetch:
	@! $(PYTHON) -c 'import pip' 2>/dev/null || PYTHONPATH=. $(PYTHON) scripts/fetch_models.py smollm2-135m

models-all: setup
	$(BIN)/python scripts/fetch_models.py all

# One-shot completion on the default model (~57 s on a fresh 2-core machine: the download beside the install).
run:
	@$(MAKE) --no-print-directory -j2 setup fetch
	@$(MAKE) --no-print-directory models
	$(BIN)/gguf-runtime complete "$(PROMPT)"

# The browser tests (tests/test_webpage.py) drive Debian's Chromium headless through Debian's chromedriver: both
# come from apt (as root, or through sudo), only when chromedriver is missing. Elsewhere install Chromium and its
# driver yourself and point GGUF_RUNTIME_CHROMIUM / GGUF_RUNTIME_CHROMEDRIVER at them.
CHROMEDRIVER ?= /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@test -x $(CHROMEDRIVER) || { command -v apt-get >/dev/null \
		|| { echo "no $(CHROMEDRIVER) and no apt-get: install Chromium and chromedriver, then set GGUF_RUNTIME_CHROMEDRIVER" >&2; exit 1; }; \
		$(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y chromium chromium-driver; }

# The tests use every catalog model (real vocabularies and quant types), so fetch them all first.
test: dev models-all browser
	$(BIN)/python -m pytest -q

# Hostile model files, chat templates and KV-state files (tests/fuzz_harness.py), per mutation category; fails
# on any crash, hang, giant allocation, foreign exception or unclear message. CI runs a short campaign in
# tests/test_hostile_models.py; this is the long one.
FUZZ_CASES ?= 3000
FUZZ_STATE_CASES ?= 200
FUZZ_SEED ?= 19
fuzz: models
	$(BIN)/python tests/fuzz_harness.py --gguf-cases $(FUZZ_CASES) --state-cases $(FUZZ_STATE_CASES) --seed $(FUZZ_SEED)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis

# The AArch64 (Apple Silicon) code path under qemu-user emulation, in a cached arm64 Debian root: kernels
# (NEON against the generic IR), tokenizers, SmolLM2 greedy parity. Needs root; slow, so not in `make test`
# or CI (README: "Apple Silicon").
.PHONY: check-aarch64
check-aarch64: models-all
	GGUF_RUNTIME_MODELS="$${GGUF_RUNTIME_MODELS:-$(CURDIR)/models}" scripts/check_aarch64.sh

# Reference fixtures: llama-cpp-python (llama.cpp, the parity reference; never a runtime dependency) in a venv
# of its own, then scripts/make_fixtures.py. Portable x86 flags: a native build uses AMX where the CPU has it and
# segfaults in llama_decode; AVX-512 is enabled only where this CPU has it (elsewhere the library dies with
# SIGILL). --no-cache-dir: pip's wheel cache ignores CMAKE_ARGS and could hand back a wheel built for another CPU.
FIXTURES_VENV ?= .fixtures-venv
LLAMA_CPP_PYTHON ?= llama-cpp-python==0.3.36
NPROC := $(shell nproc 2>/dev/null || echo 2)
HAS_AVX512 := $(shell grep -qs avx512f /proc/cpuinfo && echo ON || echo OFF)
HAS_AVX512_VNNI := $(shell grep -qs avx512_vnni /proc/cpuinfo && echo ON || echo OFF)
FIXTURES_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=$(HAS_AVX512) \
	-DGGML_AVX512_VNNI=$(HAS_AVX512_VNNI) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF

# llama_cpp.server's own dependencies (llama-cpp-python's [server] extra, pinned to the versions measured), for
# scripts/bench_serve.py. Installed apart: `pip install 'llama-cpp-python[server]'` would rebuild llama.cpp.
LLAMA_CPP_SERVER_DEPS ?= fastapi==0.165.0 uvicorn==0.54.0 sse-starlette==3.7.0 starlette-context==0.3.6 \
	pydantic-settings==2.16.3 PyYAML==6.0.4

.PHONY: fixtures-env fixtures

fixtures-env: $(FIXTURES_VENV)/.fixtures-installed $(FIXTURES_VENV)/.server-installed

$(FIXTURES_VENV)/.server-installed: $(FIXTURES_VENV)/.fixtures-installed
	$(FIXTURES_VENV)/bin/python -m pip install -q --disable-pip-version-check $(LLAMA_CPP_SERVER_DEPS)
	$(FIXTURES_VENV)/bin/python -c "import llama_cpp.server.app"
	touch $@

$(FIXTURES_VENV)/.fixtures-installed:
	$(PYTHON) -m venv $(FIXTURES_VENV)
	CMAKE_ARGS="$(FIXTURES_CMAKE_ARGS)" $(FIXTURES_VENV)/bin/python -m pip install -q --disable-pip-version-check \
		--no-cache-dir --force-reinstall "$(LLAMA_CPP_PYTHON)" gguf transformers==4.57.6
	touch $@

# llama.cpp's own llama-server, for scripts/bench_serve.py's comparison (never used by tests or the runtime): built
# from the llama.cpp sources inside the same pinned llama-cpp-python sdist, with the same CPU flags, no web UI.
LLAMA_SERVER_DIR ?= $(FIXTURES_VENV)/llama-server
.PHONY: llama-server
llama-server: $(LLAMA_SERVER_DIR)/build/bin/llama-server

$(LLAMA_SERVER_DIR)/build/bin/llama-server:
	rm -rf $(LLAMA_SERVER_DIR) && mkdir -p $(LLAMA_SERVER_DIR)/src
	$(PYTHON) -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: "$(LLAMA_CPP_PYTHON)" \
		-d $(LLAMA_SERVER_DIR)/src
	tar xzf $(LLAMA_SERVER_DIR)/src/*.tar.gz -C $(LLAMA_SERVER_DIR)/src
	cmake -S $(LLAMA_SERVER_DIR)/src/llama_cpp_python-*/vendor/llama.cpp -B $(LLAMA_SERVER_DIR)/build \
		-DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF \
		-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF $(FIXTURES_CMAKE_ARGS)
	cmake --build $(LLAMA_SERVER_DIR)/build --target llama-server -j $(NPROC)

fixtures: fixtures-env models-all
	$(FIXTURES_VENV)/bin/python scripts/make_fixtures.py tokenizer
	$(FIXTURES_VENV)/bin/python scripts/make_fixtures.py forward
	rm -rf .tiny-archs && $(BIN)/python tests/tiny_model.py .tiny-archs
	$(FIXTURES_VENV)/bin/python scripts/make_fixtures.py archs .tiny-archs && rm -rf .tiny-archs
	$(FIXTURES_VENV)/bin/python scripts/make_fixtures.py chat
