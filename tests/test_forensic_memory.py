"""psaux, envars, maps, lsof and sockstat on the real lab guest, live and on a raw
snapshot, against Volatility 3's linux.psaux, linux.envars, linux.proc.Maps, linux.lsof
and linux.sockstat on the same file and ISF;
and check-syscalls, clean on the guest and on its snapshot, and naming the entry of a
snapshot copy whose sys_call_table was rewritten.

The guest (KASLR on, so every kernel symbol goes through the slide) runs one known
process: a copy of busybox under a random directory name, started as ``sh -c "sleep 600
| cat; : ARG_TOKEN"`` with an environment of its own holding ENV_TOKEN and a random-named
file open on descriptor 7. So it has a random argv, a random environment, a mapping of a
known file (its own executable, on the tmpfs mounted on /tmp: a path that crosses a
mount), a known open file, and two children joined by a pipe. Beside it: busybox httpd
listening on a random TCP port with an nc connected to it, and syslogd's /dev/log.

Differences from Volatility 3, by design (each handled where the rows are compared):
- maps: Volatility's Flags are ``rwx`` only; ours are /proc's ``rwxp``/``rwxs``.
- maps: Volatility names every anonymous mapping ``Anonymous Mapping``, including the
  ``[vvar]`` special mapping; we print what /proc/PID/maps prints: nothing for anonymous
  memory, and ``[vvar]`` (the special mapping's own name).
- sockstat: Volatility puts a unix socket's inode in its port columns; we have an inode
  column. It needs ``socket_file_ops``/``sockfs_dentry_operations`` typed in the ISF,
  which profiles built before that builder change lack: the test builds a fresh one.
- psaux: Volatility joins the arguments with spaces into one string; we keep the list
  (JSON) and join for text. A kernel thread is ``[comm]`` in both.
- lsof: Volatility lists every thread (TID); we list processes (the lab's are all
  single-threaded, so the rows are the same). Its Device is ``major:minor`` in decimal.
  For an anonymous inode it prints ``anon_inode:[INODE]``; we print the kernel's own
  ``anon_inode:[eventfd]`` (none in the lab's processes).
"""

from __future__ import annotations

import json
import secrets
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from xenhpt.lab import machine
from xenhpt.lab.qmp import Qmp

from .conftest import current_lab, run_xenhpt
from .test_forensic_peers import volatility

pytestmark = pytest.mark.lab

START = """
ip link set lo up
httpd -p {port} -h /tmp
syslogd
(sleep 600 | nc 127.0.0.1 {port} > /dev/null 2>&1 &)
mkdir -p /tmp/{directory}
cp /bin/busybox /tmp/{directory}/sh
echo held > /tmp/{directory}/held_{file_token}
env -i HOME=/ XENHPT_TOKEN={env_token} /tmp/{directory}/sh -c "sleep 600 | cat; : {arg_token}" \
    > /dev/null 2>&1 7< /tmp/{directory}/held_{file_token} &
pid=$!
while ! tr '\\0' ' ' < /proc/$pid/cmdline | grep -q {arg_token}; do sleep 0.1; done
echo $pid
"""


def views(target: str, *extra: str) -> dict[str, list[dict]]:
    out = {}
    for view in ("psaux", "envars", "maps", "lsof", "sockstat"):
        done = run_xenhpt(view, target, "--json", *extra)
        assert done.stderr == "", f"{view} {target} warned:\n{done.stderr}"
        out[view] = [json.loads(line) for line in done.stdout.splitlines()]
    return out


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A raw snapshot of a KASLR lab guest running the known process, and its views live."""
    directory = tmp_path_factory.mktemp("forensic-memory")
    known = {"directory": f"d_{secrets.token_hex(4)}", "env_token": secrets.token_hex(6),
             "arg_token": secrets.token_hex(6), "file_token": secrets.token_hex(4),
             "port": 20000 + secrets.randbelow(40000)}
    with current_lab(directory / "lab", kaslr=True) as state:
        pid = int(machine.exec_in_guest(START.format(**known), directory=directory / "lab")
                  .stdout.split()[-1])
        live = views("lab")
        live["check-syscalls"] = run_xenhpt("check-syscalls", "lab", "--all", "--json").stdout
        with Qmp("127.0.0.1", state.qmp_port) as qmp:
            qmp.execute("stop")
        raw = machine.snapshot(directory / "lab.raw", directory / "lab")
        with Qmp("127.0.0.1", state.qmp_port) as qmp:
            qmp.execute("cont")
    symbols = directory / "symbols"
    symbols.mkdir()
    isf = machine.profile_path(state.release)
    shutil.copy(isf, symbols / isf.name)
    fresh = directory / "fresh-symbols"  # built by this checkout's profile builder
    fresh.mkdir()
    from xenhpt.profile import build_profile, write_profile

    write_profile(build_profile(kernel=machine.prepare().kernel.image, btf=None,
                                system_map=None), fresh / isf.name)
    try:
        yield {"raw": raw, "isf": isf, "symbols": symbols, "dir": directory, "pid": pid,
               "fresh": fresh,
               "live": live, "known": known,
               "views": views(str(raw), "--profile", str(isf))}
    finally:
        raw.unlink(missing_ok=True)


def rows_of(rows: list[dict], pid: int) -> list[dict]:
    return [r for r in rows if r["pid"] == pid]


# -- the known process -----------------------------------------------------------------------

def test_psaux_shows_the_random_argv_live_and_on_the_snapshot(snapshot: dict) -> None:
    known, pid = snapshot["known"], snapshot["pid"]
    [row] = rows_of(snapshot["views"]["psaux"], pid)
    assert row["args"] == [f"/tmp/{known['directory']}/sh", "-c",
                           f"sleep 600 | cat; : {known['arg_token']}"]
    assert (row["comm"], row["ppid"], row["uid"]) == ("sh", 1, 0)
    assert rows_of(snapshot["live"]["psaux"], pid) == [row]


def test_envars_shows_the_random_environment_live_and_on_the_snapshot(snapshot: dict) -> None:
    rows = rows_of(snapshot["views"]["envars"], snapshot["pid"])
    assert [(r["key"], r["value"]) for r in rows] == [
        ("HOME", "/"), ("XENHPT_TOKEN", snapshot["known"]["env_token"])]
    assert rows_of(snapshot["live"]["envars"], snapshot["pid"]) == rows


def test_maps_shows_the_known_file_mapped_across_a_mount(snapshot: dict) -> None:
    rows = rows_of(snapshot["views"]["maps"], snapshot["pid"])
    path = f"/tmp/{snapshot['known']['directory']}/sh"
    mapped = [r for r in rows if r["name"] == path]
    assert [r["permissions"] for r in mapped][:2] == ["r--p", "r-xp"]
    assert mapped[0]["offset"] == 0 and mapped[1]["offset"] > 0
    assert len({(r["major"], r["minor"], r["inode"]) for r in mapped}) == 1
    assert mapped[0]["inode"] > 0 and (mapped[0]["major"], mapped[0]["minor"]) != (0, 0)
    names = [r["name"] for r in rows]
    assert {"[heap]", "[stack]", "[vdso]", "[vvar]"} <= set(names)
    assert rows_of(snapshot["live"]["maps"], snapshot["pid"]) == rows


def test_lsof_shows_the_held_file_and_the_pipe_between_the_children(snapshot: dict) -> None:
    known, pid = snapshot["known"], snapshot["pid"]
    rows = snapshot["views"]["lsof"]
    mine = {r["fd"]: r for r in rows_of(rows, pid)}
    held = f"/tmp/{known['directory']}/held_{known['file_token']}"
    assert (mine[7]["name"], mine[7]["type"]) == (held, "REG")
    assert mine[0]["name"] == mine[1]["name"] == "/dev/null"
    children = {r["pid"]: r["comm"] for r in snapshot["views"]["psaux"] if r["ppid"] == pid}
    assert sorted(children.values()) == ["cat", "sleep"]
    by_comm = {comm: {r["fd"]: r for r in rows_of(rows, child)}
               for child, comm in children.items()}
    pipe = by_comm["sleep"][1]
    assert pipe["name"].startswith("pipe:[") and pipe["type"] == "FIFO"
    assert by_comm["cat"][0]["name"] == pipe["name"]  # both ends of one pipe
    assert rows_of(snapshot["live"]["lsof"], pid) == rows_of(rows, pid)


# -- Volatility 3, row by row ----------------------------------------------------------------

def test_psaux_agrees_with_volatility_row_by_row(snapshot: dict) -> None:
    theirs = [(r["PID"], r["PPID"], r["COMM"], r["ARGS"])
              for r in volatility(snapshot, "linux.psaux")]
    ours = [(r["pid"], r["ppid"], r["comm"],
             f"[{r['comm']}]" if r["args"] is None else " ".join(r["args"]))
            for r in snapshot["views"]["psaux"]]
    assert theirs == ours
    assert any(r[0] == snapshot["pid"] and snapshot["known"]["arg_token"] in r[3]
               for r in theirs)


def test_envars_agrees_with_volatility_row_by_row(snapshot: dict) -> None:
    theirs = [(r["PID"], r["PPID"], r["COMM"], r["KEY"], r["VALUE"])
              for r in volatility(snapshot, "linux.envars")]
    ours = [(r["pid"], r["ppid"], r["comm"], r["key"], r["value"])
            for r in snapshot["views"]["envars"]]
    assert theirs == ours
    assert (snapshot["pid"], 1, "sh", "XENHPT_TOKEN", snapshot["known"]["env_token"]) in ours


def test_lsof_agrees_with_volatility_row_by_row(snapshot: dict) -> None:
    rows = volatility(snapshot, "linux.lsof")
    assert all(r["TID"] == r["PID"] for r in rows)  # the lab's processes: one thread each
    theirs = [(r["PID"], r["Process"], r["FD"], r["Path"], r["Device"], r["Inode"], r["Type"])
              for r in rows]
    ours = [(r["pid"], r["comm"], r["fd"], r["name"], f"{r['major']}:{r['minor']}",
             r["inode"], r["type"]) for r in snapshot["views"]["lsof"]]
    assert theirs == ours
    assert any(r[0] == snapshot["pid"] and r[2] == 7 for r in theirs)


def test_maps_agrees_with_volatility_row_by_row(snapshot: dict) -> None:
    theirs = [(r["PID"], r["Process"], r["Start"], r["End"], r["Flags"], r["PgOff"],
               r["Major"], r["Minor"], r["Inode"], r["File Path"])
              for r in volatility(snapshot, "linux.proc.Maps")]

    def their_name(row: dict) -> str:
        # Volatility: rwx only, and one name for all anonymous memory and [vvar].
        return "Anonymous Mapping" if row["kind"] == "anonymous" or row["name"] == "[vvar]" \
            else row["name"]

    ours = [(r["pid"], r["comm"], int(r["start"], 16), int(r["end"], 16),
             r["permissions"][:3], r["offset"], r["major"], r["minor"], r["inode"],
             their_name(r)) for r in snapshot["views"]["maps"]]
    assert theirs == ours
    path = f"/tmp/{snapshot['known']['directory']}/sh"
    assert any(r[0] == snapshot["pid"] and r[9] == path for r in theirs)


# -- check-syscalls --------------------------------------------------------------------------

def test_check_syscalls_is_clean_live_and_on_the_untouched_snapshot(snapshot: dict) -> None:
    live = [json.loads(line) for line in snapshot["live"]["check-syscalls"].splitlines()]
    done = run_xenhpt("check-syscalls", str(snapshot["raw"]), "--all", "--json",
                      "--profile", str(snapshot["isf"]))
    ours = [json.loads(line) for line in done.stdout.splitlines()]
    # The entry MSRs: neither QEMU's gdbstub nor a memory image has them, each says why.
    [live_msr] = [f for f in live if f["check"] == "msr"]
    [our_msr] = [f for f in ours if f["check"] == "msr"]
    assert live_msr["verdict"] == our_msr["verdict"] == "not checked"
    assert "gdbstub" in live_msr["expected"] and "memory image" in our_msr["expected"]
    live = [f for f in live if f["check"] != "msr"]
    ours = [f for f in ours if f["check"] != "msr"]
    assert ours == live  # same kernel, same findings: the snapshot is the live guest
    assert all(f["verdict"] == "ok" for f in ours)
    table = [f for f in ours if f["check"] == "sys_call_table"]
    assert len(table) > 400 and table[0]["points_at"] == "__x64_sys_read"
    assert any(f["check"] == "idt" and f["index"] == 0x80 for f in ours)
    assert "clean" in run_xenhpt("check-syscalls", str(snapshot["raw"]), "--profile",
                                 str(snapshot["isf"])).stdout


def test_check_syscalls_names_a_rewritten_table_entry(snapshot: dict, tmp_path: Path) -> None:
    from xenhpt.linux.kernel import Kernel
    from xenhpt.vmi.snapshot.target import open_snapshot

    copy = tmp_path / "hooked.raw"
    shutil.copyfile(snapshot["raw"], copy)
    try:
        with open_snapshot(copy) as target:
            kernel = Kernel.open(target, snapshot["isf"])
            entry = kernel.physical(kernel.symbol("sys_call_table"))  # entry 0: read
            getpid = kernel.symbol("__x64_sys_getpid")
        with open(copy, "r+b") as f:
            f.seek(entry)
            f.write(struct.pack("<Q", getpid))
        done = run_xenhpt("check-syscalls", str(copy), "--json", "--profile",
                          str(snapshot["isf"]), check=False)
        assert done.returncode == 3, done.stderr
        [finding] = [json.loads(line) for line in done.stdout.splitlines()]
        assert (finding["check"], finding["index"], finding["name"], finding["points_at"],
                finding["expected"], finding["verdict"]) == (
            "sys_call_table", 0, "read", "__x64_sys_getpid", "__x64_sys_read",
            "wrong function")
        assert int(finding["address"], 16) == getpid
    finally:
        copy.unlink(missing_ok=True)


# -- sockstat --------------------------------------------------------------------------------

def test_sockstat_shows_the_listener_the_connection_and_dev_log(snapshot: dict) -> None:
    port = snapshot["known"]["port"]
    rows = snapshot["views"]["sockstat"]
    listening = [r for r in rows if r["state"] == "LISTEN" and r["local_port"] == port]
    assert [(r["comm"], r["type"], r["protocol"]) for r in listening] == [
        ("httpd", "STREAM", "TCP")]
    [client] = [r for r in rows if r["comm"] == "nc"]
    assert (client["family"], client["state"], client["remote"], client["remote_port"]) == \
        ("AF_INET", "ESTABLISHED", "127.0.0.1", port)
    served = [r for r in rows if r["comm"] == "httpd" and r["remote_port"] ==
              client["local_port"]]
    assert served and all(r["state"] == "ESTABLISHED" for r in served)
    assert any(r["family"] == "AF_UNIX" and r["local"] == "/dev/log" for r in rows)
    assert snapshot["live"]["sockstat"] == rows


def test_sockstat_agrees_with_volatility_row_by_row(snapshot: dict) -> None:
    fresh = {**snapshot, "symbols": snapshot["fresh"]}
    isf = next(snapshot["fresh"].iterdir())

    def port(row: dict, which: str) -> str | None:
        return None if row[which] is None else str(row[which])

    theirs = [(r["PID"], r["Process Name"], r["FD"], r["Family"], r["Type"], r["Proto"],
               r["State"], r["Source Addr"], r["Source Port"], r["Destination Addr"],
               r["Destination Port"]) for r in volatility(fresh, "linux.sockstat")]
    done = run_xenhpt("sockstat", str(snapshot["raw"]), "--json", "--profile", str(isf))
    ours = []
    for r in (json.loads(line) for line in done.stdout.splitlines()):
        if r["family"] == "AF_UNIX":  # Volatility: the inode as the "port", None if no peer
            ours.append((r["pid"], r["comm"], r["fd"], r["family"], r["type"], None,
                         r["state"], r["local"] or None, str(r["inode"]),
                         r["remote"] or None, None))
        else:
            ours.append((r["pid"], r["comm"], r["fd"], r["family"], r["type"],
                         r["protocol"], r["state"], r["local"], port(r, "local_port"),
                         r["remote"], port(r, "remote_port")))
    assert theirs == ours
    assert any(r[1] == "nc" and r[10] == str(snapshot["known"]["port"]) for r in theirs)


# -- psxview ---------------------------------------------------------------------------------

def test_psxview_flags_nothing_on_the_untouched_snapshot(snapshot: dict) -> None:
    done = run_xenhpt("psxview", str(snapshot["raw"]), "--json", "--profile",
                      str(snapshot["isf"]))
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) > 40 and not any(r["flagged"] for r in rows)
    assert any(r["pid"] == snapshot["pid"] for r in rows)


def test_psxview_flags_a_process_unlinked_from_the_task_list(snapshot: dict,
                                                             tmp_path: Path) -> None:
    """As a rootkit hides a process: its neighbours on init_task.tasks now point past it."""
    from xenhpt.linux.kernel import Kernel
    from xenhpt.linux.tasks import TaskReader
    from xenhpt.vmi.snapshot.target import open_snapshot

    copy = tmp_path / "hidden.raw"
    shutil.copyfile(snapshot["raw"], copy)
    try:
        with open_snapshot(copy) as target:
            kernel = Kernel.open(target, snapshot["isf"])
            reader = TaskReader(kernel)
            [task] = [t for t in reader.processes().tasks if t.pid == snapshot["pid"]]
            node = task.address + reader.off["tasks"]
            after, before = kernel.u64(node), kernel.u64(node + 8)
            writes = [(kernel.physical(before), after), (kernel.physical(after + 8), before)]
        with open(copy, "r+b") as f:
            for at, value in writes:
                f.seek(at)
                f.write(struct.pack("<Q", value))
        assert snapshot["pid"] not in [r["pid"] for r in (json.loads(line) for line in run_xenhpt(
            "ps", str(copy), "--json", "--profile", str(snapshot["isf"])).stdout.splitlines())]
        done = run_xenhpt("psxview", str(copy), "--json", "--profile", str(snapshot["isf"]),
                          check=False)
        assert done.returncode == 3, done.stderr
        flagged = [json.loads(line) for line in done.stdout.splitlines()
                   if json.loads(line)["flagged"]]
        assert [(r["pid"], r["comm"], r["found"]) for r in flagged] == [
            (snapshot["pid"], "sh", {"tasks": False, "children": True, "pid idr": True,
                                     "runqueue": False})]  # (it sleeps: on no runqueue)
    finally:
        copy.unlink(missing_ok=True)
