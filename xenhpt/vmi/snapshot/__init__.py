"""The snapshot backend: memory dump files as a target that cannot run (``target.py``),
the formats recognised by content (``formats.py``, ``elf.py``), the segment map they all
come down to (``memory.py``), and LibVMI's file mode as an alternative reader of raw images
(``libvmi_file.py``)."""
