"""The typed Python client of hpcgate: ``Client`` (sync) and ``AsyncClient``."""
