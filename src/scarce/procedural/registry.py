"""Every procedural task by name, and building one from `key=value` parameters."""

from scarce.errors import ScarceError
from scarce.procedural.automata import ECA
from scarce.procedural.base import Task, make_task
from scarce.procedural.copying import WW
from scarce.procedural.diagnostics import DIAGNOSTICS
from scarce.procedural.dyck import Dyck, DyckShuffle
from scarce.procedural.sequences import Delete, Identity, Reverse, Set, Sort, Stack, Union

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (Dyck, DyckShuffle, Identity, Reverse, Sort, Set, Union, Delete, Stack, ECA, WW)
} | DIAGNOSTICS


def get_task(name: str, params: dict | None = None) -> Task:
    """The task `name` with `params` (values may be strings, as typed on the command line)."""
    if name not in TASKS:
        raise ScarceError(f"unknown procedural task {name!r}; choose one of {', '.join(TASKS)}")
    return make_task(TASKS[name], dict(params or {}))


def parse_params(items: list[str]) -> dict:
    """["k=64", "length=128"] → {"k": "64", "length": "128"} (the task's fields convert the values)."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ScarceError(f"task parameter {item!r} must look like key=value, e.g. k=64")
        if key.strip() in params:
            raise ScarceError(f"task parameter {key.strip()} is given twice ({key.strip()}={params[key.strip()]} "
                              f"and {item}); give it once")
        params[key.strip()] = value.strip()
    return params


def describe(name: str) -> dict:
    """{parameter: (default, description)} of a task, for listings."""
    return {key: (field.default, field.description or "") for key, field in TASKS[name].model_fields.items()}
