# The two commands of the README. Both set up what they need first (tools/setup.sh).
.PHONY: demo test setup lint

setup:
	@bash tools/setup.sh

demo: setup
	@bash tools/demo.sh

test: setup
	@.venv/bin/ruff check xenhpt tests tools
	@.venv/bin/pytest -q

lint:
	@.venv/bin/ruff check xenhpt tests tools
