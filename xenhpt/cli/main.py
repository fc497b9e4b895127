"""The ``xenhpt`` command line: parses targets and options, wires the layers, nothing else."""

from __future__ import annotations

import importlib
import sys

import click

from ..errors import BadUsage, XenhptError

# command name -> "module:function" below xenhpt.cli. Imported only when run: a snapshot
# view must not pay for the tracer's and decoder's imports (a third of its start-up).
COMMANDS = {
    "lab": "lab:lab", "info": "info:info", "ps": "process:ps", "pstree": "process:pstree",
    "psxview": "process:psxview", "process_trace": "process:process_trace",
    "psaux": "memory:psaux", "envars": "memory:envars", "maps": "memory:maps",
    "lsof": "memory:lsof", "sockstat": "memory:sockstat",
    "check-syscalls": "integrity:check_syscalls", "profile": "profile:profile",
    "trace": "trace:trace", "decode": "decode:decode", "control": "control:control",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported the first time they are looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, name = where.split(":")
        command: click.Command = getattr(importlib.import_module(f".{module}", __package__),
                                         name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xenhpt")
def cli() -> None:
    """System calls and processes of a Linux VM, seen from the hypervisor.

    \b
    Examples:
      xenhpt lab up                 boot the built-in test guest
      xenhpt info lab               what kernel runs there, read from outside
      xenhpt ps guest.raw           processes in a memory snapshot
    """



def run(command: click.Command, args: list[str] | None = None) -> None:
    """Run a click command; user errors become one line on stderr and exit status 1
    (2 for a command line that cannot be right, as click does for its own checks)."""
    try:
        command.main(args=args, prog_name=None, standalone_mode=False)
    except BadUsage as exc:
        click.echo(f"xenhpt: error: {exc}", err=True)
        sys.exit(2)
    except XenhptError as exc:
        click.echo(f"xenhpt: error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("xenhpt: interrupted", err=True)
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()  # the help text itself, as asked for by giving nothing
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # One line, like every other error; the command's --help has the rest.
        where = f"'{exc.ctx.command_path} --help'" if exc.ctx else "--help"
        click.echo(f"xenhpt: error: {exc.format_message()} (see {where})", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("xenhpt: interrupted", err=True)
        sys.exit(130)


def main() -> None:
    run(cli)


def process_trace_main() -> None:
    from .process import process_trace

    run(process_trace)
