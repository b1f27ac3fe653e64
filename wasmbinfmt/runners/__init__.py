"""Emulators that ship with wasmbinfmt (the WASI runner)."""
