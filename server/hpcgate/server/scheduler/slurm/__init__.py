"""Slurm over SSH: commands run as the calling user, outputs parsed here."""
