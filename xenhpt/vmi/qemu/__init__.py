"""The QEMU backend: the gdbstub target (``target.py``) over the GDB remote protocol
(``gdbremote.py``), guest-physical memory through the stub or QEMU's shared RAM file
(``memory.py``), and the in-emulator capture plugin: its C source (``plugin/``) and the
byte layout of the file it shares with the tracer (``plugin_channel.py``)."""
