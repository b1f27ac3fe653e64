"""What the kernel does with an exec, without a kernel: which rule a file matches
(match.py), the emulator's argv and the #! chain (rewrite.py), looking at files (files.py)."""
