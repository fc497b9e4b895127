"""xenhpt: system calls and processes of a Linux VM, seen from the hypervisor."""
__version__ = "0.1.0"
