"""``hpcgate``: run the CLI; errors become one line on stderr and an exit code.

Exit codes tell failures apart for scripts: 2 usage, 3 not found, 4 denied
(permission or authentication), 5 invalid argument, 6 unavailable or timed
out, 7 conflicting state (exists, precondition), 8 integrity, 1 otherwise.
"""

from __future__ import annotations

import sys

import click
import grpc

from hpcgate.cli.app import app
from hpcgate.cli.output import errors
from hpcgate.client import HpcgateError

EXIT_CODES: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.PERMISSION_DENIED: 4,
    grpc.StatusCode.UNAUTHENTICATED: 4,
    grpc.StatusCode.INVALID_ARGUMENT: 5,
    grpc.StatusCode.UNAVAILABLE: 6,
    grpc.StatusCode.DEADLINE_EXCEEDED: 6,
    grpc.StatusCode.ALREADY_EXISTS: 7,
    grpc.StatusCode.FAILED_PRECONDITION: 7,
    grpc.StatusCode.DATA_LOSS: 8,
}


def main() -> None:
    """Entry point of the ``hpcgate`` script."""
    try:
        app(standalone_mode=False)
    except HpcgateError as error:
        errors.print(f"hpcgate: {error}", markup=False, highlight=False)
        sys.exit(EXIT_CODES.get(error.code, 1))
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except click.Abort:
        sys.exit(130)
    except (KeyError, ValueError, OSError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error
        errors.print(f"hpcgate: {message}", markup=False, highlight=False)
        sys.exit(2 if isinstance(error, KeyError | ValueError) else 1)


if __name__ == "__main__":
    main()
