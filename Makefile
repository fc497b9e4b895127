# The two commands of the README. Both set up what they need first (tools/setup.sh).
.PHONY: demo test setup lint matrix

setup:
	@bash tools/setup.sh

demo: setup
	@bash tools/demo.sh

test: setup
	@.venv/bin/ruff check xenhpt tests tools
	@.venv/bin/pytest -q

lint:
	@.venv/bin/ruff check xenhpt tests tools

# The kernel matrix (a bullseye 5.10, the bookworm default, a trixie 6.12; both capture
# modes; one KPTI boot): slow, so not part of 'make test'.
matrix: setup
	@.venv/bin/pytest -q -m matrix tests/test_kernel_matrix.py
