"""Helpers of ``tools/gen_syscall_tables.py``: fetch the kernel source, parse it, derive kinds."""
