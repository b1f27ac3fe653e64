"""The few calls of wasmtime's C API the WASI runner makes, through ctypes.

Why not the ``wasmtime`` package's Python API: importing it declares the
whole C API (~75-90 ms, most of a warm run of a small program); this module
loads the same shared library (the one the package ships) and declares
only what the runner uses (~1 ms). The layouts of the structures passed
by value are those of wasmtime 50's ``wasmtime/*.h``: pyproject pins the
package to that major version, and ``load()`` refuses any other.
"""

from __future__ import annotations

import ctypes
import os
import sys
from ctypes import (CFUNCTYPE, POINTER, byref, c_bool, c_char_p, c_size_t, c_uint8, c_uint32,
                    c_uint64, c_void_p)

SUPPORTED_MAJOR = "50"
EXTERN_FUNC, EXTERN_GLOBAL, EXTERN_MEMORY = 0, 1, 3
I32 = 0  # wasm_valkind_t and wasmtime_valkind_t


class WasmtimeError(Exception):
    """A wasmtime error: its message."""


class Trap(Exception):
    """The guest trapped: the trap's message; `frames`, the wasm backtrace, innermost
    first, as (function index, offset in the module, the function's name or None)."""

    def __init__(self, message: str, frames: list[tuple[int, int, str | None]] = ()):
        super().__init__(message)
        self.frames = list(frames)


class _ByteVec(ctypes.Structure):  # wasm_byte_vec_t, wasm_name_t, wasm_message_t
    _fields_ = [("size", c_size_t), ("data", c_void_p)]

    def bytes(self) -> bytes:
        return ctypes.string_at(self.data, self.size) if self.size else b""


class _PointerVec(ctypes.Structure):  # wasm_{import,export,val}type_vec_t
    _fields_ = [("size", c_size_t), ("data", POINTER(c_void_p))]


class _Func(ctypes.Structure):
    _fields_ = [("store_id", c_uint64), ("private", c_void_p)]


class _Memory(ctypes.Structure):
    _fields_ = [("store_id", c_uint64), ("private1", c_uint32), ("private2", c_uint32)]


class _Global(ctypes.Structure):
    _fields_ = [("store_id", c_uint64), ("private1", c_uint32), ("private2", c_uint32),
                ("private3", c_uint32)]


class _ExternUnion(ctypes.Union):
    _fields_ = [("func", _Func), ("global_", _Global), ("memory", _Memory),
                ("size", c_uint8 * 24)]


class _Extern(ctypes.Structure):
    _fields_ = [("kind", c_uint8), ("of", _ExternUnion)]


class _ValUnion(ctypes.Union):
    _fields_ = [("i32", ctypes.c_int32), ("size", c_uint64 * 3)]


class _Val(ctypes.Structure):
    _fields_ = [("kind", c_uint8), ("of", _ValUnion)]


class _Instance(ctypes.Structure):
    _fields_ = [("store_id", c_uint64), ("private", c_size_t)]


_CALLBACK = CFUNCTYPE(c_void_p, c_void_p, c_void_p, POINTER(_Val), c_size_t, POINTER(_Val),
                      c_size_t)
_FINALIZER = CFUNCTYPE(None, c_void_p)

# name: (result type, argument types)
_SIGNATURES = {
    "wasm_config_new": (c_void_p, []),
    "wasmtime_config_wasm_exceptions_set": (None, [c_void_p, c_bool]),
    "wasmtime_config_wasm_tail_call_set": (None, [c_void_p, c_bool]),
    "wasmtime_config_wasm_simd_set": (None, [c_void_p, c_bool]),
    "wasmtime_config_wasm_bulk_memory_set": (None, [c_void_p, c_bool]),
    "wasmtime_config_wasm_multi_value_set": (None, [c_void_p, c_bool]),
    "wasmtime_config_wasm_reference_types_set": (None, [c_void_p, c_bool]),
    "wasmtime_config_strategy_set": (None, [c_void_p, c_uint8]),
    "wasmtime_config_max_wasm_stack_set": (None, [c_void_p, c_size_t]),
    "wasmtime_config_async_stack_size_set": (None, [c_void_p, c_size_t]),
    "wasm_engine_new_with_config": (c_void_p, [c_void_p]),
    "wasmtime_module_new": (c_void_p, [c_void_p, c_char_p, c_size_t, POINTER(c_void_p)]),
    "wasmtime_module_deserialize_file": (c_void_p, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "wasmtime_module_serialize": (c_void_p, [c_void_p, POINTER(_ByteVec)]),
    "wasmtime_module_imports": (None, [c_void_p, POINTER(_PointerVec)]),
    "wasmtime_module_exports": (None, [c_void_p, POINTER(_PointerVec)]),
    "wasm_importtype_module": (POINTER(_ByteVec), [c_void_p]),
    "wasm_importtype_name": (POINTER(_ByteVec), [c_void_p]),
    "wasm_exporttype_name": (POINTER(_ByteVec), [c_void_p]),
    "wasm_byte_vec_delete": (None, [POINTER(_ByteVec)]),
    "wasmtime_store_new": (c_void_p, [c_void_p, c_void_p, c_void_p]),
    "wasmtime_store_context": (c_void_p, [c_void_p]),
    "wasi_config_new": (c_void_p, []),
    "wasi_config_set_argv": (c_bool, [c_void_p, c_size_t, POINTER(c_char_p)]),
    "wasi_config_set_env": (c_bool, [c_void_p, c_size_t, POINTER(c_char_p),
                                     POINTER(c_char_p)]),
    "wasi_config_inherit_stdin": (None, [c_void_p]),
    "wasi_config_inherit_stdout": (None, [c_void_p]),
    "wasi_config_inherit_stderr": (None, [c_void_p]),
    "wasi_config_preopen_dir": (c_bool, [c_void_p, c_char_p, c_char_p, c_bool]),
    "wasmtime_context_set_wasi": (c_void_p, [c_void_p, c_void_p]),
    "wasmtime_linker_new": (c_void_p, [c_void_p]),
    "wasmtime_linker_define_wasi": (c_void_p, [c_void_p]),
    "wasmtime_linker_allow_shadowing": (None, [c_void_p, c_bool]),
    "wasm_valtype_new": (c_void_p, [c_uint8]),
    "wasm_valtype_vec_new": (None, [POINTER(_PointerVec), c_size_t, POINTER(c_void_p)]),
    "wasm_valtype_vec_new_empty": (None, [POINTER(_PointerVec)]),
    "wasm_functype_new": (c_void_p, [POINTER(_PointerVec), POINTER(_PointerVec)]),
    "wasmtime_linker_define_func": (c_void_p, [c_void_p, c_char_p, c_size_t, c_char_p,
                                               c_size_t, c_void_p, _CALLBACK, c_void_p,
                                               _FINALIZER]),
    "wasmtime_linker_instantiate": (c_void_p, [c_void_p, c_void_p, c_void_p,
                                               POINTER(_Instance), POINTER(c_void_p)]),
    "wasmtime_linker_instantiate_pre": (c_void_p, [c_void_p, c_void_p, POINTER(c_void_p)]),
    "wasmtime_instance_pre_instantiate": (c_void_p, [c_void_p, c_void_p, POINTER(_Instance),
                                                     POINTER(c_void_p)]),
    "wasmtime_instance_export_get": (c_bool, [c_void_p, POINTER(_Instance), c_char_p, c_size_t,
                                              POINTER(_Extern)]),
    "wasmtime_func_call": (c_void_p, [c_void_p, POINTER(_Func), c_void_p, c_size_t, c_void_p,
                                      c_size_t, POINTER(c_void_p)]),
    "wasmtime_memory_data": (c_void_p, [c_void_p, POINTER(_Memory)]),
    "wasmtime_memory_data_size": (c_size_t, [c_void_p, POINTER(_Memory)]),
    "wasmtime_global_get": (None, [c_void_p, POINTER(_Global), POINTER(_Val)]),
    "wasmtime_global_set": (c_void_p, [c_void_p, POINTER(_Global), POINTER(_Val)]),
    "wasmtime_error_message": (None, [c_void_p, POINTER(_ByteVec)]),
    "wasm_trap_message": (None, [c_void_p, POINTER(_ByteVec)]),
    "wasm_trap_trace": (None, [c_void_p, POINTER(_PointerVec)]),
    "wasm_frame_func_index": (c_uint32, [c_void_p]),
    "wasm_frame_module_offset": (c_size_t, [c_void_p]),
    "wasmtime_frame_func_name": (POINTER(_ByteVec), [c_void_p]),
    "wasm_frame_vec_delete": (None, [POINTER(_PointerVec)]),
    "wasm_trap_delete": (None, [c_void_p]),
    "wasmtime_trap_new": (c_void_p, [c_char_p, c_size_t]),
}


class _Library:
    def __init__(self, path: str) -> None:
        self.path = path
        dll = ctypes.CDLL(path)
        for name, (restype, argtypes) in _SIGNATURES.items():
            function = getattr(dll, name)
            function.restype = restype
            function.argtypes = argtypes
            setattr(self, name, function)


_library: _Library | None = None


def library_path() -> str:
    """The wasmtime package's shared library, found without importing the package."""
    machine = os.uname().machine
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine)
    for entry in sys.path:
        candidate = os.path.join(entry or ".", "wasmtime", f"linux-{machine}", "_libwasmtime.so")
        if os.path.exists(candidate):
            return candidate
    raise WasmtimeError("the wasmtime package (its _libwasmtime.so) is not installed")


def installed_version(path: str) -> str | None:
    """The version of the package `path` belongs to, from its dist-info folder's name."""
    site = os.path.dirname(os.path.dirname(os.path.dirname(path)))
    try:
        names = os.listdir(site)
    except OSError:
        return None
    for name in names:
        if name.startswith("wasmtime-") and name.endswith(".dist-info"):
            return name[len("wasmtime-"):-len(".dist-info")]
    return None


def load() -> _Library:
    global _library
    if _library is None:
        path = library_path()
        version = installed_version(path)
        if version is None or version.split(".")[0] != SUPPORTED_MAJOR:
            raise WasmtimeError(f"wasmtime {version or '(unknown version)'} is installed; this "
                                f"runner is written for wasmtime {SUPPORTED_MAJOR}.x")
        _library = _Library(path)
    return _library


def _check(error: int | None) -> None:
    if error:
        message = _ByteVec()
        load().wasmtime_error_message(error, byref(message))
        raise WasmtimeError(message.bytes().decode("utf-8", "replace"))


def _backtrace(lib, trap: c_void_p) -> list[tuple[int, int, str | None]]:
    frames = _PointerVec()
    lib.wasm_trap_trace(trap, byref(frames))
    try:
        return [(lib.wasm_frame_func_index(frame), lib.wasm_frame_module_offset(frame),
                 _name_or_none(lib.wasmtime_frame_func_name(frame)))
                for frame in frames.data[:frames.size]]
    finally:
        lib.wasm_frame_vec_delete(byref(frames))


def _name_or_none(name) -> str | None:
    return name.contents.bytes().decode("utf-8", "replace") if name else None


def _names(vector: _PointerVec, *getters) -> list[tuple[str, ...]]:
    return [tuple(getter(vector.data[i]).contents.bytes().decode("utf-8", "replace")
                  for getter in getters) for i in range(vector.size)]


STRATEGIES = {"cranelift": 1, "winch": 2}  # wasmtime_strategy_t


class Engine:
    def __init__(self, features: tuple[str, ...], max_wasm_stack: int | None = None,
                 compiler: str = "cranelift", off: tuple[str, ...] = ()) -> None:
        """An engine with these wasm features on and those `off` off (the others as
        wasmtime has them), compiling with `compiler` (a key of STRATEGIES);
        `max_wasm_stack` bytes of native stack for wasm code (None: wasmtime's default,
        512 KiB)."""
        lib = load()
        config = lib.wasm_config_new()
        for feature in features:
            getattr(lib, f"wasmtime_config_wasm_{feature}_set")(config, True)
        for feature in off:
            getattr(lib, f"wasmtime_config_wasm_{feature}_set")(config, False)
        lib.wasmtime_config_strategy_set(config, STRATEGIES[compiler])
        if max_wasm_stack is not None:
            # wasmtime refuses a wasm stack larger than its async stacks (unused here).
            lib.wasmtime_config_async_stack_size_set(config, max_wasm_stack + (1 << 20))
            lib.wasmtime_config_max_wasm_stack_set(config, max_wasm_stack)
        self.pointer = lib.wasm_engine_new_with_config(config)
        self.compiler = compiler


class Module:
    def __init__(self, engine: Engine, pointer: int, file: tuple[int, int] | None = None
                 ) -> None:
        self.engine = engine
        self.pointer = pointer
        self.file = file  # (st_dev, st_ino) of the file it came from, which wasmtime keeps open

    @classmethod
    def compile(cls, engine: Engine, wasm: bytes) -> Module:
        module, wasm = c_void_p(), bytes(wasm)
        _check(load().wasmtime_module_new(engine.pointer, wasm, len(wasm), byref(module)))
        return cls(engine, module.value)

    @classmethod
    def deserialize_file(cls, engine: Engine, path: str) -> Module:
        """Load a module `serialize` made. Trusts the file: check who may write it."""
        module = c_void_p()
        # Through a descriptor of ours: the file wasmtime keeps open is then known for sure
        # (its name may be another file's by the time anyone asks).
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        by_fd = b"/proc/self/fd/%d" % fd
        try:
            st = os.fstat(fd)
            _check(load().wasmtime_module_deserialize_file(
                engine.pointer, by_fd if os.path.exists(by_fd) else os.fsencode(path),
                byref(module)))
        finally:
            os.close(fd)
        return cls(engine, module.value, (st.st_dev, st.st_ino))

    def serialize(self) -> bytes:
        lib = load()
        vector = _ByteVec()
        _check(lib.wasmtime_module_serialize(self.pointer, byref(vector)))
        data = vector.bytes()
        lib.wasm_byte_vec_delete(byref(vector))
        return data

    def imports(self) -> list[tuple[str, str]]:
        lib = load()
        vector = _PointerVec()
        lib.wasmtime_module_imports(self.pointer, byref(vector))
        return _names(vector, lib.wasm_importtype_module, lib.wasm_importtype_name)

    def exports(self) -> list[str]:
        lib = load()
        vector = _PointerVec()
        lib.wasmtime_module_exports(self.pointer, byref(vector))
        return [name for (name,) in _names(vector, lib.wasm_exporttype_name)]


class WasiLinker:
    """A linker with WASI defined, for any number of stores of one engine (and processes:
    a fork's child uses its parent's)."""

    def __init__(self, engine: Engine) -> None:
        lib = load()
        self.engine = engine
        self.pointer = lib.wasmtime_linker_new(engine.pointer)
        _check(lib.wasmtime_linker_define_wasi(self.pointer))
        lib.wasmtime_linker_allow_shadowing(self.pointer, True)  # define_func_i32 may replace
        self._callbacks: list = []  # ctypes callbacks must outlive the stores
        self.raised: BaseException | None = None  # by a host function, for call() to raise

    def define_func_i32(self, module: str, name: str, function) -> None:
        """Define (or replace) module::name as `function(i32)` returning nothing; an
        exception it raises stops the guest and comes out of `call`."""
        lib = load()
        params, results = _PointerVec(), _PointerVec()
        valtypes = (c_void_p * 1)(lib.wasm_valtype_new(I32))
        lib.wasm_valtype_vec_new(byref(params), 1, valtypes)
        lib.wasm_valtype_vec_new_empty(byref(results))
        functype = lib.wasm_functype_new(byref(params), byref(results))

        def trampoline(env, caller, args, nargs, results, nresults):
            try:
                function(args[0].of.i32)
            except BaseException as e:  # noqa: BLE001 - handed to call() through a trap
                self.raised = e
                return lib.wasmtime_trap_new(b"host function raised", 20)
            return None
        callback = _CALLBACK(trampoline)
        self._callbacks.append(callback)
        encoded_module, encoded_name = module.encode(), name.encode()
        _check(lib.wasmtime_linker_define_func(
            self.pointer, encoded_module, len(encoded_module), encoded_name,
            len(encoded_name), functype, callback, None, _FINALIZER()))

    def instantiate_pre(self, module: Module) -> int:
        """The module with its imports resolved once, for quicker instantiations."""
        pre = c_void_p()
        _check(load().wasmtime_linker_instantiate_pre(self.pointer, module.pointer,
                                                       byref(pre)))
        return pre.value


class WasiProcess:
    """A store with WASI set up, a linker with WASI defined, an instance once started."""

    def __init__(self, engine: Engine, argv: list[bytes],
                 env: list[tuple[bytes, bytes]], linker: WasiLinker | None = None) -> None:
        """argv and env: UTF-8 (wasmtime refuses anything else: WasmtimeError)."""
        lib = load()
        self.engine = engine
        self.store = lib.wasmtime_store_new(engine.pointer, None, None)
        self.context = lib.wasmtime_store_context(self.store)
        self.wasi = lib.wasi_config_new()
        if not lib.wasi_config_set_argv(self.wasi, len(argv), (c_char_p * len(argv))(*argv)):
            raise WasmtimeError("wasmtime refused the argv (not UTF-8)")
        names = (c_char_p * len(env))(*(name for name, _ in env))
        values = (c_char_p * len(env))(*(value for _, value in env))
        if not lib.wasi_config_set_env(self.wasi, len(env), names, values):
            raise WasmtimeError("wasmtime refused the environment (not UTF-8)")
        self.linker = linker or WasiLinker(engine)
        self.instance = _Instance()

    def inherit(self, stream: str) -> None:
        getattr(load(), f"wasi_config_inherit_{stream}")(self.wasi)

    def preopen(self, host: str, guest: str) -> bool:
        return load().wasi_config_preopen_dir(self.wasi, os.fsencode(host), os.fsencode(guest),
                                              True)

    def define_func_i32(self, module: str, name: str, function) -> None:
        self.linker.define_func_i32(module, name, function)

    def instantiate(self, module: Module, pre: int | None = None) -> None:
        """Instantiate `module` (`pre`: its linker.instantiate_pre(), where made)."""
        lib = load()
        _check(lib.wasmtime_context_set_wasi(self.context, self.wasi))
        trap = c_void_p()
        if pre is not None:
            error = lib.wasmtime_instance_pre_instantiate(pre, self.context,
                                                          byref(self.instance), byref(trap))
        else:
            error = lib.wasmtime_linker_instantiate(self.linker.pointer, self.context,
                                                    module.pointer, byref(self.instance),
                                                    byref(trap))
        self._finish(error, trap)

    def _export(self, name: str, kind: int) -> _Extern | None:
        item = _Extern()
        encoded = name.encode()
        found = load().wasmtime_instance_export_get(self.context, byref(self.instance), encoded,
                                                    len(encoded), byref(item))
        return item if found and item.kind == kind else None

    def has_export(self, name: str, kind: int) -> bool:
        return self._export(name, kind) is not None

    def call(self, name: str) -> None:
        """Call the exported function `name` (no parameters, no results)."""
        item = self._export(name, EXTERN_FUNC)
        if item is None:
            raise WasmtimeError(f"no exported function {name}")
        trap = c_void_p()
        self._finish(load().wasmtime_func_call(self.context, byref(item.of.func), None, 0, None,
                                               0, byref(trap)), trap)

    def _finish(self, error: int | None, trap: c_void_p) -> None:
        """Raise what a call into the guest ended with: a host function's exception, an
        error, or a trap."""
        if self.linker.raised is not None:
            raised, self.linker.raised = self.linker.raised, None
            raise raised
        _check(error)
        if trap.value:
            lib = load()
            message = _ByteVec()
            lib.wasm_trap_message(trap, byref(message))
            raise Trap(message.bytes().rstrip(b"\0").decode("utf-8", "replace"),
                       _backtrace(lib, trap))

    def global_i32(self, name: str) -> int:
        item = self._export(name, EXTERN_GLOBAL)
        if item is None:
            raise WasmtimeError(f"no exported global {name}")
        value = _Val()
        load().wasmtime_global_get(self.context, byref(item.of.global_), byref(value))
        return value.of.i32

    def set_global_i32(self, name: str, number: int) -> None:
        item = self._export(name, EXTERN_GLOBAL)
        if item is None:
            raise WasmtimeError(f"no exported global {name}")
        value = _Val()
        value.kind, value.of.i32 = I32, number
        _check(load().wasmtime_global_set(self.context, byref(item.of.global_), byref(value)))

    def write_memory(self, name: str, address: int, data: bytes) -> None:
        item = self._export(name, EXTERN_MEMORY)
        if item is None:
            raise WasmtimeError(f"no exported memory {name}")
        lib = load()
        size = lib.wasmtime_memory_data_size(self.context, byref(item.of.memory))
        if address < 0 or address + len(data) > size:
            raise WasmtimeError(f"write of {len(data)} bytes at {address} is out of bounds")
        ctypes.memmove(lib.wasmtime_memory_data(self.context, byref(item.of.memory)) + address,
                       data, len(data))

