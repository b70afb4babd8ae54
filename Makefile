# Flywheel — the two commands are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin/flywheel

# Tests find the real services here; `make test` starts them.
export FLYWHEEL_TEST_KAFKA ?= 127.0.0.1:9092
export FLYWHEEL_TEST_CLICKHOUSE ?= 127.0.0.1:9000
# A second broker and a second ClickHouse server that the fault tests stop and
# start, and how they do it.
export FLYWHEEL_TEST_KAFKA_FAULT ?= 127.0.0.1:9192
export FLYWHEEL_TEST_CLICKHOUSE_FAULT ?= 127.0.0.1:9100
export FLYWHEEL_TEST_SERVICES ?= $(CURDIR)/scripts/services.sh
# One node of the ClickHouse cluster (2 shards x 2 replicas, ZooKeeper) that
# the cluster tests migrate and query (scripts/services.sh cluster-up).
export FLYWHEEL_TEST_CLICKHOUSE_CLUSTER ?= 127.0.0.1:9301
# The Kafka cluster of three brokers (3 replicas, 2 in sync) whose brokers
# the cluster fault test kills (scripts/services.sh kafka-cluster-up).
export FLYWHEEL_TEST_KAFKA_CLUSTER ?= 127.0.0.1:9391,127.0.0.1:9392,127.0.0.1:9393
# A ClickHouse whose users need a password and whose native port speaks TLS
# (scripts/services.sh clickhouse-secure-up), and the folder holding its CA
# (ca.pem), user and password files.
export FLYWHEEL_TEST_CLICKHOUSE_SECURE ?= 127.0.0.1:9440
export FLYWHEEL_TEST_CLICKHOUSE_SECURE_SECRETS ?= $(or $(FLYWHEEL_SERVICES_DIR),$(CURDIR)/.services)/clickhouse-secure/secrets
# The ClickHouse server's HTTP port, and the Python with chDB (ClickHouse
# 26.x in process) that the compatibility test compares it with.
export FLYWHEEL_TEST_CLICKHOUSE_HTTP ?= 127.0.0.1:8123
export FLYWHEEL_CACHE ?= $(HOME)/.cache/flywheel
export FLYWHEEL_CHDB_VERSION ?= 26.9.0
export FLYWHEEL_TEST_CHDB_PYTHON ?= $(FLYWHEEL_CACHE)/chdb-$(FLYWHEEL_CHDB_VERSION)/bin/python
# The Open Bandit Dataset sample (from obp's source package on PyPI) that the
# import test evaluates on; scripts/obd.sh fetches it into the cache.
export FLYWHEEL_OBP_VERSION ?= 0.5.7
export FLYWHEEL_TEST_OBD ?= $(FLYWHEEL_CACHE)/obd-$(FLYWHEEL_OBP_VERSION)

.PHONY: all build test unit demo bench services-up services-down services-status fuzz clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/flywheel

## test: everything — vet, unit, integration and end-to-end tests against
## the real Kafka broker and ClickHouse server, which it starts first.
test: services-up
	scripts/services.sh browser
	scripts/services.sh chdb
	scripts/obd.sh
	FLYWHEEL_KAFKA_PORT=9192 scripts/services.sh kafka-up
	FLYWHEEL_CLICKHOUSE_PORT=9100 scripts/services.sh clickhouse-up
	scripts/services.sh clickhouse-secure-up
	scripts/services.sh cluster-up
	scripts/services.sh kafka-cluster-up
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

## demo: services up, `flywheel dev` with a fast retrain schedule, the
## simulator; prints reward rate by model version next to random and oracle.
demo: services-up build
	scripts/demo.sh

## bench: benchmarks; results as JSON under bench/results/.
bench: services-up
	scripts/bench.sh

## fuzz: run each fuzz target for a while (FUZZTIME, default 30s).
fuzz:
	$(GO) test -run XXX -fuzz FuzzDecode -fuzztime $${FUZZTIME:-30s} ./model
	$(GO) test -run XXX -fuzz FuzzDecodeRank -fuzztime $${FUZZTIME:-30s} ./serve
	$(GO) test -run XXX -fuzz FuzzParseFeedback -fuzztime $${FUZZTIME:-30s} ./serve
	$(GO) test -run XXX -fuzz FuzzScanDecision -fuzztime $${FUZZTIME:-30s} ./ingest
	$(GO) test -run XXX -fuzz FuzzScanFeatures -fuzztime $${FUZZTIME:-30s} .
	$(GO) test -run XXX -fuzz FuzzScanLoggedActions -fuzztime $${FUZZTIME:-30s} .
	$(GO) test -run XXX -fuzz FuzzScannerSkip -fuzztime $${FUZZTIME:-30s} .

services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

services-status:
	scripts/services.sh status

clean:
	rm -rf bin
