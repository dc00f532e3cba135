"""Sweeps: expand a study's spec into jobs, plan them, and run them with a launcher.

Modules, one job each (import them directly; this package imports nothing heavy):

- ``spec``      read and check ``configs/sweep/<name>.yaml``
- ``plan``      expand a spec into jobs and find each job's run directory without running it
- ``job``       one job as the command line that starts it
- ``local``, ``inline``, ``pool``, ``slurm``   the launchers
- ``progress``  the one-line progress display
- ``cli``       ``alphaadam sweep`` and ``alphaadam status``
"""
