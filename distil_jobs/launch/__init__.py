"""Launchers: run a job on Slurm or as local processes (submitit), without the job knowing who launched it."""
