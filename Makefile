# Tollway: `make dev` runs the whole system locally; `make test` runs every test.
SHELL := /bin/bash
# Resolved when a recipe runs (after `deps` may have installed it).
UV = $(shell command -v uv 2>/dev/null || { test -x $(HOME)/.local/bin/uv && echo $(HOME)/.local/bin/uv; } || echo python3 -m uv)
export UV_LINK_MODE ?= copy

.PHONY: bench bench-deps bench-idle bench-suite bench-overhead bench-breakers bench-research deps browser-deps kafka-deps dev test test-kafka deploy-lint asyncapi test-unit test-integration lint fmt clean

deps: ## install uv, PostgreSQL server binaries (Debian) and the locked Python environment
	@./deploy/scripts/install-deps.sh

dev: kafka-deps ## run the whole system on embedded defaults (Apache Kafka, Postgres) and print how to call it
	@$(UV) run --frozen python -m tollway.devstack

browser-deps: ## Debian's Chromium, for the dashboard's browser tests
	@./deploy/scripts/install-browser.sh

test: deps browser-deps ## every test, on an embedded Postgres and Kafka-protocol broker
	@$(UV) run --frozen pytest -q

kafka-deps: deps ## Java 17 and Maven (Debian), then Apache Kafka's jars from Maven Central, cached
	@./deploy/scripts/install-kafka-deps.sh
	@$(UV) run --frozen python -m tollway.devstack.kafka

test-kafka: kafka-deps browser-deps ## integration and end-to-end tests on Apache Kafka 4.x (KRaft) started here
	@TOLLWAY_BROKER=kafka $(UV) run --frozen pytest -q tests/integration tests/e2e

test-unit: deps
	@$(UV) run --frozen pytest -q tests/unit

lint: deps deploy-lint ## service boundaries, ruff and mypy (strict), and the deployment files
	@$(UV) run --frozen python deploy/scripts/check_boundaries.py
	@$(UV) run --frozen ruff check .
	@$(UV) run --frozen ruff format --check .
	@$(UV) run --frozen mypy libs services deploy/scripts/check_boundaries.py

deploy-lint: deps ## deploy/ and docs/asyncapi.json against bundled schemas, offline
	@$(UV) run --frozen hadolint deploy/Dockerfile
	@$(UV) run --frozen check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
	@$(UV) run --frozen kubernetes-validate --strict --quiet -k 1.31.0 deploy/k8s/*.yaml
	@$(UV) run --frozen check-jsonschema --schemafile docs/schemas/asyncapi-3.0.0.json docs/asyncapi.json

asyncapi: deps ## regenerate docs/asyncapi.json from the event contracts
	@$(UV) run --frozen python -m tollway.events.asyncapi --out docs/asyncapi.json

fmt: deps
	@$(UV) run --frozen ruff format .
	@$(UV) run --frozen ruff check --fix .

# The benchmarks run on Apache Kafka (the production broker) unless TOLLWAY_BROKER=tansu.
BENCH_BROKER = TOLLWAY_BROKER=$${TOLLWAY_BROKER:-kafka}

bench: kafka-deps bench-deps ## wrk vs direct, LiteLLM (bare, with database and budget), Portkey at c=1..128, both brokers; bench/results/wrk.md
	@$(UV) run --frozen python bench/wrk_bench.py --brokers kafka,tansu

bench-deps: ## wrk (Debian), the native load generator of `make bench`
	@command -v wrk >/dev/null 2>&1 || { test "$$(id -u)" -eq 0 && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make bench needs wrk: run 'sudo apt-get install wrk'" >&2; exit 1; }

bench-idle: kafka-deps ## CPU of an idle dev stack, per process, on both brokers (or TOLLWAY_BROKER); bench/results/idle-<broker>.md
	@for broker in $${TOLLWAY_BROKER:-kafka tansu}; do $(UV) run --frozen python bench/idle.py --broker $$broker || exit 1; done

bench-suite: kafka-deps ## the older suite (overhead with httpx vs direct and LiteLLM, ledger, breakers); bench/results/report.md
	@$(BENCH_BROKER) $(UV) run --frozen python bench/suite.py

bench-overhead: kafka-deps ## gateway overhead against the demo upstream and LiteLLM only
	@$(BENCH_BROKER) $(UV) run --frozen python bench/overhead.py

bench-breakers: kafka-deps ## threshold crossing -> first refused request (p50/p99) under load
	@$(BENCH_BROKER) $(UV) run --frozen python bench/breaker_latency.py

bench-research: deps ## how long each research mode takes; report in bench/results/
	@$(UV) run --frozen python bench/research.py

clean: ## remove local state (databases, logs)
	rm -rf .tollway
