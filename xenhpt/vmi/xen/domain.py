"""Finding a Xen domain from Dom0 and attaching to it: ``xen:NAME|DOMID`` -> :class:`XenTarget`.

A name or id is resolved through xenstore (else ``xl``); :func:`check_dom0` says in one
line why this machine cannot reach domains at all; :func:`open_xen` attaches LibVMI
(partial init, Xen driver, no OS profile) and hands the connection to the target.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ...errors import TargetUnreachable, XenhptError
from .target import XenTarget

PRIVCMD = Path("/dev/xen/privcmd")
PROC_CAPABILITIES = Path("/proc/xen/capabilities")


# How long a toolstack query may take. Seconds on a real host; the Xen lab's nested dom0,
# on a loaded machine, once needed more than 30 s for `xl domid lab` (a traceback then).
TOOL_TIMEOUT = 120


def _run_tool(*command: str) -> subprocess.CompletedProcess[str] | None:
    """Run a Xen toolstack command; None if it is not installed. A tool that does not
    answer in ``TOOL_TIMEOUT`` s is one clear error, not a traceback."""
    tool = shutil.which(command[0])
    if tool is None:
        return None
    try:
        return subprocess.run([tool, *command[1:]], capture_output=True, text=True,
                              timeout=TOOL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise TargetUnreachable(f"xen: `{' '.join(command)}` did not answer in "
                                f"{TOOL_TIMEOUT} s (xenstored or the toolstack is hung "
                                "or overloaded)") from None


def _xenstore(path: str) -> str | None:
    done = _run_tool("xenstore-read", path)
    return done.stdout.strip() if done is not None and done.returncode == 0 else None


def _xl(*args: str) -> str | None:
    done = _run_tool("xl", *args)
    return done.stdout.strip() if done is not None and done.returncode == 0 else None


def resolve_domain(spec: str) -> tuple[str, int]:
    """``NAME`` or ``DOMID`` -> (name, domid), from xenstore (``/local/domain/ID/name``),
    else from ``xl domname`` / ``xl domid``."""
    if spec.isdigit():
        name = _xenstore(f"/local/domain/{int(spec)}/name") or _xl("domname", spec)
        if not name:
            raise TargetUnreachable(f"xen:{spec}: no Xen domain with id {spec} (xl list)")
        return name, int(spec)
    for domid in _list_domids():
        if _xenstore(f"/local/domain/{domid}/name") == spec:
            return spec, domid
    found = _xl("domid", spec)
    if found and found.isdigit():
        return spec, int(found)
    raise TargetUnreachable(f"xen:{spec}: no running Xen domain named {spec!r} (xl list)")


def _list_domids() -> list[int]:
    done = _run_tool("xenstore-list", "/local/domain")
    return [int(x) for x in done.stdout.split() if x.isdigit()] if done is not None else []


def domain_exists(name: str, domid: int) -> bool:
    """False once domain ``domid`` is no longer ``name`` (destroyed; a reboot makes a new
    domid): asked of xenstore, else of ``xl domname``. True whenever neither can tell.

    A rebooted domain whose memory the tracer still maps lingers as ``(null) --psrd`` in
    ``xl list`` until the tracer lets go: only its name entry says it is dead."""
    try:
        if shutil.which("xenstore-read") is not None:
            done = subprocess.run(["xenstore-read", f"/local/domain/{domid}/name"],
                                  capture_output=True, text=True, timeout=10)
            # xenstore-read's words for a path that is gone (xl removes /local/domain/ID
            # at destroy)
            gone = ("ENOENT", "No such file", "couldn't read path")
        elif shutil.which("xl") is not None:  # a dom0 without xenstore-utils
            done = subprocess.run(["xl", "domname", str(domid)], capture_output=True,
                                  text=True, timeout=10)
            gone = ("does not exist",)  # "Can't get domain name of domain id 1, maybe ..."
        else:
            return True
    except (OSError, subprocess.TimeoutExpired):
        return True
    if done.returncode != 0:
        return not any(word in done.stderr for word in gone)
    return done.stdout.strip() == name


def check_dom0() -> None:
    """One clear line when this machine cannot reach Xen domains at all."""
    if not PRIVCMD.exists() and not PROC_CAPABILITIES.exists():
        raise TargetUnreachable("xen: targets need a Xen Dom0 (no /dev/xen/privcmd here: "
                                "this machine is not running under Xen)")
    try:
        caps = PROC_CAPABILITIES.read_text()
    except OSError:
        caps = "control_d"  # xenfs not mounted: let LibVMI try
    if "control_d" not in caps:
        raise TargetUnreachable("xen: targets need Dom0: this is a Xen guest without "
                                "control_d capability")
    if os.geteuid() != 0:
        raise TargetUnreachable("xen: targets need root in Dom0 (LibVMI maps guest memory)")


def open_xen(spec: str, **options: Any) -> XenTarget:
    """Open ``NAME`` or ``DOMID`` (the part after ``xen:``) as a :class:`XenTarget`.

    ``XENHPT_XEN_TRAP=sldt`` traps with ``sldt`` + DESCRIPTOR_ACCESS events instead of
    INT3 (hosts whose INT3 never reaches the monitor, such as stock QEMU's TCG).
    """
    if not spec:
        raise XenhptError("bad target 'xen:': expected xen:NAME or xen:DOMID")
    check_dom0()
    try:
        from libvmi import INIT_DOMAINNAME, INIT_EVENTS, Libvmi, LibvmiError, VMIMode
    except ImportError as exc:
        raise TargetUnreachable(f"xen:{spec}: the libvmi Python package is not usable: "
                                f"{exc}") from None
    name, domid = resolve_domain(spec)

    def connect(events: bool) -> Any:
        flags = INIT_DOMAINNAME | (INIT_EVENTS if events else 0)
        try:
            return Libvmi(name, flags, mode=VMIMode.XEN, partial=True)
        except LibvmiError as exc:
            raise TargetUnreachable(f"xen:{spec}: LibVMI cannot attach to domain {name!r} "
                                    f"(domid {domid}): {exc}"
                                    + (" (another monitor attached?)" if events else "")) \
                from None

    options.setdefault("trap", os.environ.get("XENHPT_XEN_TRAP") or "int3")
    options.setdefault("alive", lambda: domain_exists(name, domid))
    return XenTarget(connect, name, domid, **options)
