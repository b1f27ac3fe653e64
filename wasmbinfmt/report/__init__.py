"""What a run tells afterwards: the exec log (execlog.py) and `compare` (compare.py)."""
