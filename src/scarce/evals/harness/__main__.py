"""lm-eval's own command line, with the `scarce` model registered and scarce's KJV tasks available.

    python -m scarce.evals.harness --model scarce --model_args run=runs/a --tasks kjv_cloze
    python -m scarce.evals.harness run --model scarce --model_args run=runs/a:runs/b --tasks kjv --limit 100

The plain `lm_eval` command cannot load third-party models (lm-eval 0.4 has no plugin mechanism), so
this module imports scarce's adapter and then hands every argument to lm-eval unchanged. When no
`--include_path` is given it adds scarce's task folder; with one, name scarce's tasks by YAML path.
"""

import sys

from scarce.errors import ScarceError


def main() -> None:
    try:
        from scarce.evals.harness import (
            TASKS_DIR,
            adapter,  # noqa: F401  (registers the model `scarce`)
        )
    except ScarceError as e:
        sys.exit(f"error: {e}")
    from lm_eval.__main__ import cli_evaluate

    if not any(arg == "--include_path" or arg.startswith("--include_path=") for arg in sys.argv[1:]):
        if len(sys.argv) > 1 and sys.argv[1] not in ("-h", "--help"):
            sys.argv += ["--include_path", str(TASKS_DIR)]
    sys.argv[0] = "python -m scarce.evals.harness"
    cli_evaluate()


if __name__ == "__main__":
    main()
