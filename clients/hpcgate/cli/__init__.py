"""The ``hpcgate`` command line (Typer + Rich) over :mod:`hpcgate.client`."""
