"""runners/capi.py: the slice of wasmtime's C API the WASI runner uses."""

from __future__ import annotations

import pytest
import wasmtime

from wasmbinfmt.runners import capi


def test_the_library_is_the_packages_and_its_version_the_supported_one():
    path = capi.library_path()
    assert path.endswith("_libwasmtime.so") and "wasmtime" in path
    assert capi.installed_version(path).split(".")[0] == capi.SUPPORTED_MAJOR


def test_another_major_version_is_refused_by_name(monkeypatch):
    monkeypatch.setattr(capi, "_library", None)
    monkeypatch.setattr(capi, "installed_version", lambda path: "51.0.0")
    with pytest.raises(capi.WasmtimeError, match="wasmtime 51.0.0 is installed; this runner is "
                                                 "written for wasmtime 50.x"):
        capi.load()


def test_errors_traps_and_host_exceptions_come_out_as_exceptions():
    engine = capi.Engine(("simd",))
    with pytest.raises(capi.WasmtimeError, match="failed to parse"):
        capi.Module.compile(engine, b"\0asm\1\0\0\0\xff")
    module = capi.Module.compile(engine, wasmtime.wat2wasm("""(module
        (import "env" "f" (func $f (param i32)))
        (func (export "trap") unreachable)
        (func (export "host") (call $f (i32.const 42))))"""))
    assert module.imports() == [("env", "f")] and module.exports() == ["trap", "host"]
    process = capi.WasiProcess(engine, [b"x"], [])

    class Raised(Exception):
        pass

    def f(value):
        raise Raised(value)
    process.define_func_i32("env", "f", f)
    process.instantiate(module)
    with pytest.raises(capi.Trap, match="unreachable"):
        process.call("trap")
    with pytest.raises(Raised) as raised:
        process.call("host")
    assert raised.value.args == (42,)
    with pytest.raises(capi.WasmtimeError, match="no exported function missing"):
        process.call("missing")


def test_a_module_round_trips_through_serialize(tmp_path):
    engine = capi.Engine(())
    module = capi.Module.compile(engine, wasmtime.wat2wasm('(module (func (export "go")))'))
    (tmp_path / "m.cwasm").write_bytes(module.serialize())
    assert capi.Module.deserialize_file(engine, str(tmp_path / "m.cwasm")).exports() == ["go"]
    (tmp_path / "bad.cwasm").write_bytes(b"not compiled code")
    with pytest.raises(capi.WasmtimeError):
        capi.Module.deserialize_file(engine, str(tmp_path / "bad.cwasm"))
