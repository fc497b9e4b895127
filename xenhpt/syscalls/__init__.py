"""System-call knowledge and strace-style decoding, independent of any hypervisor backend.

``table``   templates per ABI (number, name, entry point, argument kinds, trace classes) from
            the generated ``data/*.json`` (``tools/gen_syscall_tables.py``), and ``-e trace=``
            selections;
``decode``  ``Decoder``: raw registers + a guest-memory reader -> strace's text;
``kinds``   the argument kinds and what each prints.
"""
