"""The tracer: ptrace and seccomp mechanics. Architecture details live in arch.py only."""
