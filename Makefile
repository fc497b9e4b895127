# The two commands of the README. Both set up what they need first (tools/setup.sh).
.PHONY: demo test setup lint matrix dwarf xen-lab

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
# modes; one KPTI boot; bookworm's i386 686-pae and 686 kernels with a 32-bit userland,
# both capture modes too):
# slow, so not part of 'make test'.
matrix: setup
	@.venv/bin/pytest -q -m matrix tests/test_kernel_matrix.py tests/test_i386_lab.py

# profile build --dwarf on the -dbg vmlinux of the lab kernel and of bookworm's i386 686-pae
# kernel (~300 + 770 MB downloads, cached), compared with the BTF profile and with gdb;
# prints the counts. No VM.
dwarf: setup
	@.venv/bin/pytest -q -s -m dwarf tests/test_profile_dwarf_kernel.py

# The Xen lab (Xen 4.17 + dom0 + an HVM domU in the lab's patched QEMU, INT3 traps; the
# QEMU lab's trace checks run in dom0): ~15 min, more on the first run (it builds QEMU).
xen-lab: setup
	@bash tools/xenlab/run.sh
