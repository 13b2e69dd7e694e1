# Aegis: the two Quick-start commands are `make demo` and `make test` (see README.md).
# Both install the Debian packages they need first (idempotent), so they work on a fresh Debian 12.

SHELL := /bin/bash
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS ?= $(shell nproc)
PYTHON := /usr/bin/python3
FIXTURES := $(abspath $(BUILD))/fixtures
FUZZ_SECONDS ?= 12
# Left out of the AddressSanitizer pass only: statistical quality and timing tests that train or
# attack models for minutes under ASan. They run in the release pass, and the code they drive runs
# under ASan in the module's other tests. GoogleTest patterns joined by ':' (Suite.* leaves out a
# whole suite); the tests run one process per suite (tests/cmake/discover_suites.cmake).
ASAN_SKIP ?= Federation.RobustAggregation*:MonitorExtractionDetectors.FlagExtractQueryLog*:DpSgd.Timing*:Hardening.PgdAdversarialTraining*:PiiQuality.*:GuardQuality.*:HttpClassifierTest.ExtractionSteals*:PrivacyCli.MiaReportsEveryAttack*

DEB_PACKAGES := cmake ninja-build g++ ccache pkg-config libcli11-dev nlohmann-json3-dev libarchive-dev \
  zlib1g-dev libgtest-dev libbenchmark-dev clang-14 libclang-rt-14-dev \
  libhdf5-dev libprotobuf-dev protobuf-compiler libonnx-dev libssl-dev libsqlite3-dev \
  python3 python3-torch python3-numpy python3-joblib python3-sklearn python3-py7zr p7zip-full libopenblas0-pthread \
  python3-h5py python3-onnx python3-protobuf python3-cryptography python3-dill \
  libtorch-dev libopencv-dev libboost-dev libyaml-cpp-dev libeigen3-dev dataset-fashion-mnist openssl \
  libhyperscan-dev libre2-dev libtomlplusplus-dev libphonenumber-dev python3-fake-factory \
  libhiredis-dev redis-server libicu-dev jupyter-server python3-nbformat \
  libpqxx-dev postgresql chromium fonts-dejavu-core libargon2-dev nodejs

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build web demo test test-release test-asan fuzz-smoke fixtures fuzz bench clean

all: build

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:" $$missing; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAEGIS_FIXTURE_DIR=$(FIXTURES)

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

# Scans the shipped example folder: benign files pass, the malicious ones are reported (exit 1 expected).
demo: build
	@echo "== aegis scan examples/ =="
	@./$(BUILD)/aegis scan examples/ --format table; status=$$?; \
	echo "(exit status $$status: 0 clean, 1 findings at or above --fail-on, 2 error)"; [ $$status -le 1 ]
	@echo "== aegis attack: FGSM and PGD on the Fashion-MNIST example CNN (first 500 test images) =="
	@./$(BUILD)/aegis attack --model examples/fashion-mnist/model.pt --data /usr/share/datasets/fashion-mnist \
	  --split test --limit 500 --attack fgsm,pgd --eps 0.05,0.1,0.2 --steps 20 --format table; status=$$?; \
	echo "(exit status $$status)"; [ $$status -le 1 ]
	@echo "== aegis mia: does the example CNN give away which 2000 training images it saw? =="
	@mkdir -p $(BUILD)/demo && $(PYTHON) -c "import numpy; numpy.save('$(BUILD)/demo/members.npy', numpy.arange(2000))"
	@./$(BUILD)/aegis mia --model examples/fashion-mnist/model.pt --members $(BUILD)/demo/members.npy \
	  --output-dir $(BUILD)/demo/mia --format table; status=$$?; echo "(exit status $$status)"; [ $$status -le 1 ]
	@echo "== aegis extract: steal a copy of the example CNN with 1000 queries of natural data =="
	@./$(BUILD)/aegis extract --target examples/fashion-mnist/model.pt --surrogate examples/fashion-mnist/model_init.pt \
	  --budget 1000 --strategy natural --epochs 5 --test-limit 2000 --format table; status=$$?; \
	echo "(exit status $$status)"; [ $$status -le 1 ]
	@echo "== aegis pii: personal data and secrets in a generated customer data set (CSV, JSON Lines, JSON, SQLite, text) =="
	@$(PYTHON) tests/fixtures/pii_corpus.py $(BUILD)/demo/pii --rows 300 --seed 1 > /dev/null
	@./$(BUILD)/aegis pii $(BUILD)/demo/pii/customers.csv $(BUILD)/demo/pii/patients.jsonl $(BUILD)/demo/pii/employees.json \
	  $(BUILD)/demo/pii/crm.sqlite $(BUILD)/demo/pii/notes.txt --format table; status=$$?; \
	echo "(exit status $$status: 1 = personal data at or above --fail-on)"; [ $$status -le 1 ]
	@echo "== aegis guard scan: prompt-injection verdicts for a few prompts (benign, direct, DAN, base64, fullwidth, indirect) =="
	@./$(BUILD)/aegis guard scan examples/llm/prompts.jsonl; status=$$?; \
	echo "(exit status $$status: 1 = some prompt flagged)"; [ $$status -le 1 ]
	@echo "== aegis redteam: probes against a loopback chat server with scripted weaknesses (build/bench/scripted_chat_server) =="
	@mkdir -p $(BUILD)/demo && rm -f $(BUILD)/demo/chat.port; \
	./$(BUILD)/bench/scripted_chat_server > $(BUILD)/demo/chat.port 2>/dev/null & pid=$$!; \
	for i in $$(seq 50); do [ -s $(BUILD)/demo/chat.port ] && break; sleep 0.1; done; \
	port=$$(awk '{print $$2}' $(BUILD)/demo/chat.port); \
	./$(BUILD)/aegis redteam --target http://127.0.0.1:$$port/v1 --model scripted --probes direct-injection,system-prompt-extraction,data-leakage,obfuscation \
	  --transforms none,base64 --out $(BUILD)/demo/redteam --quiet; status=$$?; kill $$pid; \
	echo "(exit status $$status: 1 = an attack succeeded; transcript and report in $(BUILD)/demo/redteam)"; [ $$status -le 1 ]
	@echo "== aegis audit-infra: the deployment files of an example ML platform (examples/infra) =="
	@./$(BUILD)/aegis audit-infra examples/infra --format table; status=$$?; \
	echo "(exit status $$status: 1 = findings at or above --fail-on)"; [ $$status -le 1 ]
	@echo "== aegis assess: the whole engagement over examples/assess/inventory.yaml (threat model, scan, attacks, MIA, extraction, PII, gateway review, red team, infra) =="
	@mkdir -p $(BUILD)/demo && rm -f $(BUILD)/demo/assess-store.db* $(BUILD)/demo/chat-18431.port; \
	./$(BUILD)/bench/scripted_chat_server 18431 > $(BUILD)/demo/chat-18431.port 2>/dev/null & pid=$$!; \
	for i in $$(seq 50); do [ -s $(BUILD)/demo/chat-18431.port ] && break; sleep 0.1; done; \
	./$(BUILD)/aegis assess examples/assess/inventory.yaml --store $(BUILD)/demo/assess-store.db --html $(BUILD)/demo/assessment.html \
	  --format markdown --output $(BUILD)/demo/assessment.md; status=$$?; kill $$pid; \
	echo "(exit status $$status; reports: $(BUILD)/demo/assessment.html and assessment.md; \
	'aegis report --store $(BUILD)/demo/assess-store.db --format html' rebuilds them from the store)"; [ $$status -le 1 ]
	@echo "(the dashboard over this store: aegis users add admin --role admin --store $(BUILD)/demo/assess-store.db, then \
	aegis serve --store $(BUILD)/demo/assess-store.db and open http://127.0.0.1:8080; make web builds its front end)"
	@echo "== aegis schedule: what is due for reassessment under the inventory's policy =="
	@./$(BUILD)/aegis schedule examples/assess/inventory.yaml --store $(BUILD)/demo/assess-store.db --quiet
	@echo "== aegis audit-infra --target: a real Jupyter server started on loopback without a token, probed read-only =="
	@dir=$(abspath $(BUILD))/demo/jupyter; rm -rf $$dir; mkdir -p $$dir; \
	port=$$($(PYTHON) -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'); \
	HOME=$$dir JUPYTER_RUNTIME_DIR=$$dir/runtime JUPYTER_CONFIG_DIR=$$dir/config JUPYTER_DATA_DIR=$$dir/data \
	  jupyter-server --ServerApp.token='' --ServerApp.password='' --ServerApp.ip=127.0.0.1 --ServerApp.port=$$port \
	  --ServerApp.open_browser=False --ServerApp.root_dir=$$dir --allow-root > $$dir/server.log 2>&1 & pid=$$!; \
	for i in $$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$$port) 2>/dev/null && break; sleep 0.2; done; \
	./$(BUILD)/aegis audit-infra --target 127.0.0.1:$$port --format table; status=$$?; kill $$pid; \
	echo "(exit status $$status)"; [ $$status -le 1 ]
	@echo "== aegis train-dp: a Fashion-MNIST MLP with DP-SGD at epsilon 3 =="
	@$(PYTHON) bench/privacy/make_dp_models.py $(BUILD)/demo/dp 2000
	@./$(BUILD)/aegis train-dp --model $(BUILD)/demo/dp/mlp_init.pt --limit 2000 --target-epsilon 3 --epochs 10 \
	  --expected-batch 256 --lr 0.5 --save $(BUILD)/demo/dp/mlp_dp.pt --test-limit 2000 --format table; status=$$?; \
	echo "(exit status $$status)"; [ $$status -le 1 ]

# The dashboard's front end (web/: Preact, bundled by esbuild) and playwright-core for its browser
# test, from the npm registry at the versions package-lock.json pins. Debian 12's nodejs package
# brings Node 18; npm comes with it or from Debian's npm package.
web: deps
	@command -v npm > /dev/null || { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends npm; }
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build

fixtures: deps
	$(PYTHON) tests/fixtures/make_fixtures.py $(FIXTURES)

test-release: build fixtures web
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# The whole suite again under AddressSanitizer and UBSan.
test-asan: deps fixtures web
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DAEGIS_SANITIZE=ON -DAEGIS_BENCH=OFF \
	  -DAEGIS_FIXTURE_DIR=$(FIXTURES) '-DAEGIS_TEST_EXCLUDE=$(ASAN_SKIP)'
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

# Builds the libFuzzer targets with clang and runs each briefly over the fixtures (a smoke run;
# `make fuzz FUZZ_SECONDS=600` is the long local run).
fuzz-smoke: deps fixtures
	cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang-14 \
	  -DCMAKE_CXX_COMPILER=clang++-14 -DAEGIS_FUZZ=ON -DAEGIS_TESTS=OFF -DAEGIS_BENCH=OFF
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@for fuzzer in $(FUZZ_BUILD)/fuzz/*_fuzzer; do \
	  name=$$(basename $$fuzzer); work=$$(mktemp -d); \
	  echo "== $$name for $(FUZZ_SECONDS)s"; \
	  $$fuzzer -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
	    $$work $(FIXTURES)/benign $(FIXTURES)/malicious $(FIXTURES)/malformed \
	    $$( [ -d fuzz/seeds/$$name ] && echo fuzz/seeds/$$name ) > $$work.log 2>&1; \
	  status=$$?; grep -E 'stat::number_of_executed_units|ERROR|SUMMARY' $$work.log; \
	  if [ $$status -ne 0 ]; then tail -n 60 $$work.log; echo "$$name FAILED (exit $$status)"; exit 1; fi; \
	  rm -rf $$work $$work.log; \
	done; echo "fuzz smoke: all targets ran without a crash"

fuzz: FUZZ_SECONDS=600
fuzz: fuzz-smoke

test: test-release test-asan fuzz-smoke
	@echo "All test stages passed."

bench: build
	./$(BUILD)/bench/aegis_bench

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
