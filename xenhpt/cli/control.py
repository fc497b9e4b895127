"""``xenhpt control SOCKET COMMAND``: steer a trace started with ``--control SOCKET``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import XenhptError
from ..tracer.control import send_command


@click.command()
@click.argument("socket_path", metavar="SOCKET", type=click.Path(path_type=Path))
@click.argument("command", type=click.Choice(["status", "pause", "resume", "add", "remove",
                                              "filter"]))
@click.option("-e", "expression", metavar="trace=SET",
              help="With add/remove: the calls (names and classes, as for trace -e).")
@click.option("-p", "pids", type=int, multiple=True,
              help="With filter: only this process (repeat for more; none: every process).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
def control(socket_path: Path, command: str, expression: str | None, pids: tuple[int, ...],
            as_json: bool) -> None:
    """Steer a running 'xenhpt trace ... --control SOCKET' without stopping it.

    Changes take effect at the guest's next call; 'status' prints the counters and the
    current selection and filters.

    \b
    Examples:
      xenhpt control /tmp/t.sock status
      xenhpt control /tmp/t.sock add -e trace=write
      xenhpt control /tmp/t.sock remove -e trace=%file
      xenhpt control /tmp/t.sock filter -p 412
      xenhpt control /tmp/t.sock pause
    """
    if command in ("add", "remove") and not expression:
        raise click.UsageError(f"{command} needs -e trace=SET")
    if command not in ("add", "remove") and expression:
        raise click.UsageError(f"-e goes with add or remove, not {command}")
    if pids and command != "filter":
        raise click.UsageError(f"-p goes with filter, not {command}")
    request: dict[str, object] = {"command": command}
    if expression:
        request["expression"] = expression
    if command == "filter":
        request["pids"] = list(pids)
    answer = send_command(socket_path, request)
    if not answer.get("ok"):
        raise XenhptError(str(answer.get("error", "the trace refused the command")))
    answer.pop("ok")
    if as_json:
        click.echo(json.dumps(answer))
        return
    for key, value in answer.items():
        if isinstance(value, dict):
            value = "; ".join(f"{abi}: {','.join(names) or '-'}" for abi, names in value.items())
        click.echo(f"{key}: {value}")
