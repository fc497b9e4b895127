"""Errors a user can cause. The CLI catches ``XenhptError`` once and prints one line.

Anything else that escapes is a bug in xenhpt and keeps its traceback.
"""


class XenhptError(Exception):
    """Base of every error that is the user's input or environment, not a bug."""


class BadUsage(XenhptError):
    """The command line asks for something that cannot be: exit status 2, like click's."""


class OutputError(XenhptError):
    """The trace's output cannot be written (broken pipe, full disk, bad path)."""


class TargetUnreachable(XenhptError):
    """The target (gdbstub, Xen domain, lab) cannot be contacted."""


class TargetGone(XenhptError):
    """The guest went away (powered off, rebooted, QEMU died) while we were attached."""


class MemoryReadError(XenhptError):
    """A guest address could not be read (not present, outside the snapshot, ...)."""

    def __init__(self, address: int, message: str = "unreadable guest address") -> None:
        super().__init__(f"{message}: {address:#x}")
        self.address = address


class SnapshotError(XenhptError):
    """A memory snapshot file is missing, truncated, corrupt or of an unknown format."""


class MsrUnavailable(XenhptError):
    """This target cannot read model-specific registers (the message says why)."""


class ProfileError(XenhptError):
    """A profile is missing, malformed, or does not match the guest."""


class LabError(XenhptError):
    """The lab guest could not be prepared, booted or reached."""
