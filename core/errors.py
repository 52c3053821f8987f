"""One error convention for every `python -m` entrypoint.

An error a user can cause and fix (a config value, an input file, a parent run, a model folder)
is a `UserError`, or a subclass naming its area (`ConfigError`, `RunError`, the data loaders'
errors). `@entrypoint` turns it into one line on stderr, `[<kind> ]error: <message>`, and exit
code 2, with no traceback. Anything else is a bug and keeps its traceback.

    @entrypoint
    def main(argv: list[str] | None = None) -> Path:
        cfg, recipe = parse_args(MyConfig, argv, prog="stage.train")
        ...
"""
from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """An error the user can fix; printed as `[<kind> ]error: <message>` with exit code 2."""
    kind = ""


def error_line(e: UserError) -> str:
    return f"{e.kind + ' ' if e.kind else ''}error: {e}"


def entrypoint(main):
    """Wrap a `main(argv=None)`: a UserError becomes its one-line message and SystemExit(2)."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(error_line(e), file=sys.stderr, flush=True)
            raise SystemExit(2) from None
    return wrapper
