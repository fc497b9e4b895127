# The two commands of the README. Both set up what they need first (tools/setup.sh).
.PHONY: demo test setup lint matrix xen-lab

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

# The Xen lab (Xen 4.17 + dom0 + an HVM domU in the lab's patched QEMU, INT3 traps; the
# QEMU lab's trace checks run in dom0): ~15 min, more on the first run (it builds QEMU).
xen-lab: setup
	@bash tools/xenlab/run.sh
