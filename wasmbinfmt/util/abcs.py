"""collections.abc's classes, for annotations and isinstance, without importing collections.

collections.abc is `from _collections_abc import *` inside the collections
package, whose import costs ~1.5 ms of every start (wasmbinfmt's and the WASI
runner's); _collections_abc itself is loaded by every Python before our code
runs (os needs it). The classes are the same objects.
"""

from _collections_abc import Callable, Iterable, Iterator, Mapping, Sequence

__all__ = ["Callable", "Iterable", "Iterator", "Mapping", "Sequence"]
