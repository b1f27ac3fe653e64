"""wasmbinfmt: run foreign executables as if native, in a whole process tree, without root."""

__version__ = "0.1.0"
