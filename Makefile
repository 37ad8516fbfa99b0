PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve bytecode test lint fmt proto bench bench-compare clean constraints redis-server

# First run: about two minutes; pip prints each package as it goes (no -q), so it is visible.
$(STAMP): pyproject.toml constraints.txt setup.py | nghttp2-dev c-tools
	@echo "==> setting up $(VENV): pip, then pdp with its test tools (pinned by constraints.txt)"
	test -x $(BIN)/python || $(PY) -c 'import ensurepip' 2>/dev/null \
		|| (apt-get update -qq && apt-get install -y -qq $(notdir $(PY))-venv)  # Debian's python3.11
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install --progress-bar on -c constraints.txt -e '.[test]'
	$(MAKE) --no-print-directory bytecode
	touch $(STAMP)
	@echo "==> $(VENV) ready"

# An editable install leaves pdp's own modules without bytecode (pip compiles only what it
# copies), and where PYTHONDONTWRITEBYTECODE is set Python never writes it: every start then
# compiles ~120 modules, about 0.2 s of a 0.7 s start-up (bench/startup.py). Cheap when current.
bytecode:
	@$(BIN)/python -m compileall -q pdp >/dev/null

serve: $(STAMP) bytecode
	$(BIN)/pdp serve --policies policies --listen 127.0.0.1:50051 --http-listen 127.0.0.1:3592 --watch

# Debian's redis-server: the rate-limit tests run a real one (tests/limits/).
redis-server:
	@command -v redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server)

# Debian's libnghttp2 headers: the native transport's extension (pdp/server/native/_h2.c),
# built by the install, and the bench's load driver; OpenSSL's (libssl-dev) for its TLS
# (_tls.c). gcc is taken as present (CI has it).
.PHONY: nghttp2-dev native
nghttp2-dev:
	@test -f /usr/include/nghttp2/nghttp2.h -a -f /usr/include/zlib.h || (apt-get update -qq && apt-get install -y -qq libnghttp2-dev zlib1g-dev)
	@test -f /usr/include/openssl/ssl.h || (apt-get update -qq && apt-get install -y -qq libssl-dev)

# gcc with its ASan and UBSan runtimes (Debian's gcc brings libasan8 and libubsan1) and
# Python's headers: the install builds the extension with them, and `make test` builds it
# again under the sanitizers (tests/security/test_native_sanitized.py).
.PHONY: c-tools
c-tools:
	@command -v gcc >/dev/null && test -f "$$(gcc -print-file-name=libasan.so)" \
		&& test -f /usr/include/stdio.h || (apt-get update -qq && apt-get install -y -qq gcc libc6-dev)
	@test -f "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" \
		|| (apt-get update -qq && apt-get install -y -qq $(notdir $(PY))-dev)

# The extension again when its source changed since the install built it.
NATIVE_EXT := pdp/server/native/_h2$(shell $(PY) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
native: $(NATIVE_EXT)
$(NATIVE_EXT): pdp/server/native/_h2.c pdp/server/native/_h2_stream.c pdp/server/native/_tls.c pdp/server/native/_tls.h setup.py $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace
	rm -rf build/temp.* build/lib.*

# The same extension built with ASan + UBSan, for a hand run of the hostile probe (not part
# of `make test`): docs/NATIVE.md says how to load it.
.PHONY: native-asan
native-asan: $(STAMP) nghttp2-dev
	mkdir -p build/asan/pdp/server/native
	gcc -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -Wall -Wextra -shared -fPIC \
		-o build/asan/pdp/server/native/_h2$(shell $(PY) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))") \
		pdp/server/native/_h2.c pdp/server/native/_tls.c -lnghttp2 -lssl -lcrypto -lz \
		-I"$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"

# Coverage-guided fuzzing of the native transport's C with libFuzzer (docs/NATIVE.md):
# pdp/server/native/fuzz/h2_fuzz.c under clang's -fsanitize=fuzzer,address,undefined (Debian's
# clang, installed when missing; `make test` does not need it), from the seed corpus, for
# FUZZ_SECONDS. New inputs go to build/fuzz/corpus, a crash to build/fuzz/crash-*.
FUZZ_SECONDS ?= 300
.PHONY: fuzz-native
fuzz-native: $(STAMP) nghttp2-dev
	@command -v clang >/dev/null || (apt-get update -qq && apt-get install -y -qq clang)
	mkdir -p build/fuzz/corpus
	$(BIN)/python pdp/server/native/fuzz/build.py fuzzer build/fuzz/h2_fuzz
	build/fuzz/h2_fuzz -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 -max_len=65536 \
		-dict=pdp/server/native/fuzz/h2.dict -artifact_prefix=build/fuzz/ $(ARGS) \
		build/fuzz/corpus pdp/server/native/fuzz/corpus

# One pytest runner per usable core (pytest-xdist), a test file per runner at a time: most
# tests wait on a server they started, and a file's module-scoped servers start once.
test: $(STAMP) c-tools redis-server bench-driver native
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pdp fmt --check policies
	$(BIN)/python -m pytest -n auto --dist loadfile --durations=15

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

proto: $(STAMP)
	$(BIN)/python -m pdp.server.protogen

bench: $(STAMP)
	$(BIN)/python bench/engine.py

# pdp vs cedarpy, regopy, casbin, Cerbos and the hand-written floor (bench/compare.py). Needs
# h2load (Debian nghttp2-client) and npm for the gRPC part; installs the `bench` extra.
bench-compare: $(STAMP) bench-driver
	$(BIN)/python -m pip install -q -e '.[bench]'
	command -v h2load >/dev/null || (apt-get update -qq && apt-get install -y -qq nghttp2-client) || true
	$(BIN)/python bench/compare.py $(ARGS)

# The multi-payload gRPC load driver (bench/driver/grpcload.c) on Debian's libnghttp2: it rotates
# through many distinct request bodies where h2load repeats one. Built into bench/.cache/.
DRIVER := bench/.cache/grpcload
.PHONY: bench-driver
bench-driver: $(DRIVER)
$(DRIVER): bench/driver/grpcload.c
	test -f /usr/include/nghttp2/nghttp2.h || (apt-get update -qq && apt-get install -y -qq libnghttp2-dev)
	mkdir -p bench/.cache
	gcc -O2 -Wall -Wextra -o $@.$$$$ $< -lnghttp2 && mv $@.$$$$ $@  # atomic: tests may build at once

# pdp's native transport (pdp/server/native/_h2.c) against `pdp serve --workers 1`, Cerbos and
# the empty-handler floors, on varied traffic (bench/native/; issue 21).
.PHONY: bench-native
bench-native: $(STAMP) bench-driver native
	$(BIN)/python -m pip install -q -e '.[bench]'  # Cerbos' protobufs, as bench-compare
	$(BIN)/python bench/native/compare_native.py $(ARGS)

# Re-resolve the dependencies in a scratch venv and pin what it installed.
constraints:
	rm -rf build/constraints-venv && $(PY) -m venv build/constraints-venv
	build/constraints-venv/bin/python -m pip install -q -e '.[test]'
	{ sed -n '1,3p' constraints.txt; build/constraints-venv/bin/python -m pip freeze --exclude-editable | grep -v '^pdp' ; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf build/constraints-venv

clean:
	rm -rf $(VENV) build *.egg-info

# Mutation testing of the security paths (docs/MUTATION.md): mutmut over the modules listed in
# pyproject.toml's [tool.mutmut], each mutant run against the fast tests that cover it. Prints
# the score per module and every survivor with its triage; fails on an untriaged survivor.
# ARGS narrows the run to mutant-name globs, e.g. make mutation ARGS='pdp.engine.*'.
.PHONY: mutation
mutation: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[mutation]'
	rm -rf mutants  # mutmut keeps results across test changes; a check must start afresh
	nice -n 10 $(BIN)/mutmut run --max-children 2 $(ARGS)
	$(BIN)/python tests/mutation/report.py
