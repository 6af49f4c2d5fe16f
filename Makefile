# trailwatch — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SAMVENV := .venv-sam
SAMSTAMP := $(SAMVENV)/.installed
# checkov pins many libraries of its own: it gets its own virtualenv, like the SAM CLI.
CHECKOVVENV := .venv-checkov
CHECKOVSTAMP := $(CHECKOVVENV)/.installed

.PHONY: help venv demo test bench bench-instructions noise mutate sam-venv sam-build sam-validate lint-template clean lock \
	checkov-venv checkov artifact

help:
	@echo "make demo      set up and run the end-to-end demo on an embedded local AWS (no account needed)"
	@echo "make test      set up and run the test suite"
	@echo "make bench     handler vs decode floor on ordinary and attack traffic ($$TRAILWATCH_CORPUS,"
	@echo "               else events/); CPU instructions too when valgrind is installed"
	@echo "make bench-instructions   only the CPU instruction counts (valgrind/callgrind)"
	@echo "make noise     alerts per 1,000 records on ../shared/corpus/benign (state table on moto)"
	@echo "make mutate    mutation-test the security-critical modules (slow; not in CI), print score"
	@echo "make sam-venv  install the AWS SAM CLI in its own virtualenv ($(SAMVENV))"
	@echo "make sam-build / sam-validate   build / lint the SAM template with that SAM CLI"
	@echo "make lock      refresh handlers/requirements.txt (hashes) from requirements.in + pyproject"
	@echo "make artifact  build the Lambda artifact from the lock into build/artifact (local check)"
	@echo "make checkov   scan template.yaml with checkov (own virtualenv, $(CHECKOVVENV))"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,sam]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/trailwatch demo

# The suite runs on one pytest-xdist worker per core (TEST_WORKERS=0 runs it serially); tests
# share no ports (servers bind port 0) and no files outside their tmp_path.
TEST_WORKERS ?= auto
test: $(STAMP) $(SAMSTAMP) $(CHECKOVSTAMP)
	env -u AWS_ENDPOINT_URL -u AWS_PROFILE $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# Wall time on both workloads, then CPU instructions per log event under callgrind when valgrind
# is installed (BENCH_INSTRUCTIONS=0 skips it; BENCH_INSTRUCTIONS_TIMEOUT bounds it, 900 s).
bench: $(STAMP)
	$(BIN)/python bench/bench_handler.py

bench-instructions: $(STAMP)
	$(BIN)/python bench/bench_handler.py --instructions-only

noise: $(STAMP)
	$(BIN)/python bench/noise.py

# Mutation testing: mutmut 3 over the modules listed in pyproject's [tool.mutmut],
# with the fast suite (-m "not slow"). Results are cached in mutants/; `rm -rf mutants` for a
# fresh run. Prints the score and every survivor (`.venv/bin/mutmut show NAME` for its diff).
# MUTANTS selects the functions that carry the safety logic (about 720 mutants); `make mutate
# MUTANTS=` mutates every function of the modules in [tool.mutmut] (about 2,700: hours).
MUTATE_JOBS ?= 2
MUTANTS ?= 'setup.policy_eval.*' 'handlers.pipeline.x_decompress*' \
	'handlers.sinks.base.x_pack*' 'handlers.sinks.eventbridge.x_eventbridge_entry_size*' \
	'handlers.sinks.sns.x?SnsSink?attributes_size*' 'handlers.sinks.sns.x?SnsSink?prepare*' \
	'handlers.sinks.eventbridge.x?EventBridgeSink?prepare*' \
	'setup.wiring.planner.x_kms_policy_allows_logs*' 'setup.wiring.cis_alarms.x_removal_steps*' \
	'setup.verify.destinations.x_lambda_allows_logs*' \
	'setup.wiring.executor.x_classify_update_trail_error*'
mutate: $(STAMP)
	$(BIN)/pip install -q 'mutmut>=3.8,<4'
	-HYPOTHESIS_PROFILE=mutate env -u AWS_ENDPOINT_URL -u AWS_PROFILE \
		nice -n 19 $(BIN)/mutmut run --max-children $(MUTATE_JOBS) $(MUTANTS)
	$(BIN)/python .ci/mutation_report.py mutants $(MUTANTS)

$(SAMSTAMP):
	$(PYTHON) -m venv $(SAMVENV)
	$(SAMVENV)/bin/pip install -q --upgrade pip
	$(SAMVENV)/bin/pip install -q aws-sam-cli
	touch $(SAMSTAMP)

sam-venv: $(SAMSTAMP)

# --build-in-source: SAM runs build-ProcessorFunction here instead of copying the whole tree
# (virtualenvs included) to a scratch directory first; setup/package.py reads only handlers/.
sam-build: $(SAMSTAMP)
	SAM_CLI_TELEMETRY=0 $(SAMVENV)/bin/sam build --build-in-source --template-file template.yaml

sam-validate: $(SAMSTAMP)
	SAM_CLI_TELEMETRY=0 $(SAMVENV)/bin/sam validate --lint --template-file template.yaml --region us-east-1

$(CHECKOVSTAMP):
	$(PYTHON) -m venv $(CHECKOVVENV)
	$(CHECKOVVENV)/bin/pip install -q --upgrade pip
	$(CHECKOVVENV)/bin/pip install -q checkov
	touch $(CHECKOVSTAMP)

checkov-venv: $(CHECKOVSTAMP)

checkov: $(CHECKOVSTAMP)
	$(CHECKOVVENV)/bin/checkov -f template.yaml --framework cloudformation --skip-download --compact

lock: $(STAMP)
	$(BIN)/python -m setup.package lock

artifact:
	rm -rf build/artifact
	$(PYTHON) -m setup.package build/artifact --platform manylinux2014_aarch64 --python-version 3.13

clean:
	rm -rf $(VENV) $(SAMVENV) $(CHECKOVVENV) .aws-sam build *.egg-info .pytest_cache .hypothesis

# Called by `sam build` (BuildMethod: makefile) with ARTIFACTS_DIR set: arm64, Python 3.13.
build-ProcessorFunction:
	python3 -m setup.package "$(ARTIFACTS_DIR)" --platform manylinux2014_aarch64 --python-version 3.13

# The watchdog runs setup/verify (the CLI's checks), so its artifact bundles setup/ beside
# handlers/ (boto3 comes from the Lambda runtime). The demo stays out: the tree is copied whole,
# then setup/demo/ is removed. setup.package then compiles it to bytecode with everything else.
build-WatchdogFunction:
	mkdir -p "$(ARTIFACTS_DIR)"
	rm -rf "$(ARTIFACTS_DIR)/setup"
	cp -R setup "$(ARTIFACTS_DIR)/setup"
	rm -rf "$(ARTIFACTS_DIR)/setup/demo"
	find "$(ARTIFACTS_DIR)/setup" -name __pycache__ -type d -prune -exec rm -rf {} +
	python3 -m setup.package "$(ARTIFACTS_DIR)" --platform manylinux2014_aarch64 --python-version 3.13
