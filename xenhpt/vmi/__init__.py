"""Guests seen from outside: addresses in, bytes and vCPU registers out.

``target.py`` is the one protocol every backend implements. One folder per backend
(``qemu/``, ``xen/``, ``snapshot/``): a new hypervisor is a new folder beside them with a
``target.py``. Architecture code the backends share (paging, the instruction emulator)
is in ``x86/``. Nothing here knows Linux; ``xenhpt/linux`` hands the backends what they
need of it.
"""
