# The two commands a newcomer needs: `make demo` and `make test`. Both set everything up.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch and torchvision at the versions this project's machines hold on disk (no download).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-fast setup data browser postgres bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[all,test]"
	touch $(STAMP)

# Fashion-MNIST: Debian's dataset-fashion-mnist when apt-get is usable (root), else imclass
# downloads the official files into ~/.cache/imclass and checks their MD5.
data: $(STAMP)
	@if ! $(PY) -m imclass.data.fashion_mnist --local-only >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get install -y -q dataset-fashion-mnist || \
	     (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) >/dev/null; \
	  fi; \
	fi
	@echo "Fashion-MNIST: $$($(PY) -m imclass.data.fashion_mnist)"

# Debian's chromium and chromedriver, for the test that opens report.html in a real browser.
browser:
	@if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
	    && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q chromium chromium-driver || \
	   (apt-get update -q && apt-get install -y -q chromium chromium-driver)) >/dev/null; \
	fi

# A PostgreSQL server on loopback for the test of `imclass tune` workers sharing one study
# (Debian's postgresql; started here because CI starts no services of its own).
PG_URL := postgresql://imclass:imclass@127.0.0.1:5432/imclass_test
postgres:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  if ! command -v pg_lsclusters >/dev/null 2>&1; then \
	    (apt-get install -y -q postgresql || \
	     (apt-get update -q && apt-get install -y -q postgresql)) >/dev/null; \
	  fi; \
	  service postgresql start >/dev/null; \
	  su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='imclass'\" | grep -q 1 || \
	    psql -qc \"CREATE ROLE imclass LOGIN PASSWORD 'imclass'\""; \
	  su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='imclass_test'\" | \
	    grep -q 1 || createdb -O imclass imclass_test"; \
	fi

demo: data
	$(VENV)/bin/imclass train --out runs/demo --overwrite

# lint-imports: the import layers of docs/design.md (contracts in pyproject.toml).
test: data browser postgres
	$(VENV)/bin/lint-imports --no-cache
	IMCLASS_TEST_POSTGRES=$(PG_URL) $(PY) -m pytest -q

test-fast: data
	$(PY) -m pytest -q -m "not slow"

bench: data
	$(PY) bench/default_recipe.py --runs 3

clean:
	rm -rf $(VENV) runs .pytest_cache
