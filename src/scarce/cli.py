"""The `scarce` command: every command and group in one table, the root group, and `main`.

Each command is a plain function in scarce/commands/ (one module per group of commands: parse, call the
library, print); nothing here or there that a Python user could not call from the library.
"""

import errno
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup
from typer.rich_utils import rich_format_error

try:  # Typer ≥ 0.2x carries its own copy of Click
    from typer._click import exceptions as click_errors
except ImportError:
    from click import exceptions as click_errors

from scarce.commands import data, diagnose, ensemble, eval, laws, procedural, runs, specialize, study, sweep, train
from scarce.errors import ScarceError

# name: the command's function, in the order `scarce --help` lists them
COMMANDS = {
    "train": train.train,
    "sizes": train.sizes,
    "eval": eval.eval_,
    "runs": runs.runs_,
    "quickstart": train.quickstart,
    "export": eval.export,
    "fit": laws.fit,
    "laws": laws.laws,
    "plan": laws.plan,
    "efficiency": laws.efficiency,
    "sweep": sweep.sweep,
    "tune": sweep.tune,
    "specialize": specialize.specialize,
    "plan-specialize": specialize.plan_specialize,
    "sample": ensemble.sample,
    "distill": ensemble.distill,
    "study": study.study,
}
# group: (its help, {subcommand: function})
GROUPS = {
    "data": ("Corpora and token stores.", {"list": data.data_list, "prepare": data.data_prepare}),
    "procedural": ("Procedural data: formal languages, algorithmic tasks and diagnostics.",
                   {"list": procedural.list_tasks, "sample": procedural.sample}),
    "diagnose": ("Diagnostics of procedural warm-ups (docs/procedural.md).", {
        "haystack": diagnose.haystack, "addition": diagnose.addition, "reversed-addition": diagnose.reversed_addition,
        "multiplication": diagnose.multiplication, "warmup": diagnose.warmup, "tokens-to-loss": diagnose.tokens_to_loss,
    }),
    "ensemble": ("Ensembles of runs that differ by seed: train K members, score them.",
                 {"train": ensemble.ensemble_train, "eval": ensemble.ensemble_eval}),
}


class ScarceGroup(TyperGroup):
    """The root group, reading `scarce plan specialize FIT.json ...` as `scarce plan-specialize FIT.json ...`.
    `scarce plan` takes a fit file as its first argument, so it cannot also have subcommands; `specialize`
    there names this command unless a file of that name exists."""

    def parse_args(self, ctx, args):
        if args[:2] == ["plan", "specialize"] and not Path("specialize").exists():
            args = ["plan-specialize", *args[2:]]
        return super().parse_args(ctx, args)


app = typer.Typer(help="Pretraining language models when unique data is the limit.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=ScarceGroup)
for _name, _function in COMMANDS.items():
    app.command(_name)(_function)
for _group, (_help, _commands) in GROUPS.items():
    _app = typer.Typer(help=_help, no_args_is_help=True)
    for _name, _function in _commands.items():
        _app.command(_name)(_function)
    app.add_typer(_app, name=_group)


# a place scarce cannot read or write (permissions, a read-only or full disk, a file where a folder should be)
_PLACE_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOSPC,
                 errno.EDQUOT}


def main():
    """Console entry point: a ScarceError is one red line and exit code 2, not a traceback; so is a usage
    error (Click's: a bad number, an unknown option) and an OSError about a place (the check before the work
    missed it). The message is printed literally: brackets in a path
    are not Rich markup."""
    try:
        code = typer.main.get_command(app).main(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as e:  # `scarce` or `scarce data` alone: its help, as Typer shows it
        rich_format_error(e)
        raise SystemExit(e.exit_code) from None
    except click_errors.UsageError as e:  # a bad number, a missing argument, an unknown option: one line too
        hint = f" (see {e.ctx.command_path} --help)" if e.ctx is not None else ""
        _error(e.format_message() + hint)
    except click_errors.ClickException as e:
        _error(e.format_message())
    except typer.Abort:
        Console(stderr=True).print("Aborted!")
        raise SystemExit(1) from None
    except ScarceError as e:
        _error(str(e))
    except OSError as e:
        if e.errno not in _PLACE_ERRORS or e.filename is None:
            raise
        _error(f"cannot use {e.filename}: {e.strerror}")
    raise SystemExit(code if isinstance(code, int) else 0)


def _error(message: str):
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("error:", "red"), " ", message), highlight=False)
    raise SystemExit(2) from None


if __name__ == "__main__":  # `torchrun --nproc_per_node 2 -m scarce.cli train ...`
    main()
