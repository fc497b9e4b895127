"""x86-64 architecture code shared by every backend: page-table walks (``paging.py``) and
the instruction emulator that executes a trapped instruction in the guest's place
(``emulate.py``). Knows the CPU, not the hypervisor and not the guest OS."""
