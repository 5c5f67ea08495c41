"""Reliability and security suite (issue 7): hostile uploads, bad settings, training faults, crashes,
store load, path confinement, concurrency. See RELIABILITY.md for the table of cases and outcomes."""
