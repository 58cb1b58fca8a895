"""Scheduler adapters behind one interface (Slurm over SSH first)."""
