/* The in-process launcher measured by scripts/bench_launcher.py (issue 28, item 8): a
 * precompiled WASI command run in the exec'd process itself through wasmtime's C API (the
 * library the wasmtime wheel ships), so its CPU time and memory are the caller's child's as
 * natively. A prototype to measure by: argv, environment, / preopened, proc_exit; no tiers,
 * no current directory seeding, no descriptor or stack limits. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
typedef struct { size_t size; char *data; } byte_vec;
typedef struct { uint64_t store_id; size_t priv; } instance_t;
typedef struct { uint64_t store_id; size_t priv; } func_t;
typedef struct { uint8_t kind; union { func_t func; uint64_t pad[3]; } of; } extern_t;
void *wasm_engine_new(void);
void *wasmtime_module_deserialize_file(void *engine, const char *path, void **module);
void *wasmtime_store_new(void *engine, void *data, void *finalizer);
void *wasmtime_store_context(void *store);
void *wasi_config_new(void);
bool wasi_config_set_argv(void *, size_t, const char **);
bool wasi_config_set_env(void *, size_t, const char **, const char **);
void wasi_config_inherit_stdin(void *); void wasi_config_inherit_stdout(void *);
void wasi_config_inherit_stderr(void *);
bool wasi_config_preopen_dir(void *, const char *, const char *, bool);
void *wasmtime_context_set_wasi(void *, void *);
void *wasmtime_linker_new(void *engine);
void *wasmtime_linker_define_wasi(void *);
void *wasmtime_linker_instantiate(void *, void *, void *, instance_t *, void **);
bool wasmtime_instance_export_get(void *, instance_t *, const char *, size_t, extern_t *);
void *wasmtime_func_call(void *, func_t *, void *, size_t, void *, size_t, void **);
bool wasmtime_error_exit_status(void *, int *);
void wasmtime_error_message(void *, byte_vec *);
extern char **environ;

static void die(const char *what, void *error) {
    byte_vec m = {0};
    if (error) wasmtime_error_message(error, &m);
    fprintf(stderr, "launch: %s: %.*s\n", what, (int)m.size, m.data ? m.data : "");
    exit(126);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    void *engine = wasm_engine_new();
    void *module = NULL;
    void *error = wasmtime_module_deserialize_file(engine, argv[1], &module);
    if (error) die("deserialize", error);
    void *store = wasmtime_store_new(engine, NULL, NULL);
    void *context = wasmtime_store_context(store);
    void *wasi = wasi_config_new();
    wasi_config_set_argv(wasi, argc - 2, (const char **)argv + 2);
    size_t n = 0;
    while (environ[n]) n++;
    const char **names = calloc(n + 1, sizeof *names), **values = calloc(n + 1, sizeof *values);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        char *eq = strchr(environ[i], '=');
        if (!eq) continue;
        names[kept] = strndup(environ[i], eq - environ[i]);
        values[kept++] = eq + 1;
    }
    wasi_config_set_env(wasi, kept, names, values);
    wasi_config_inherit_stdin(wasi); wasi_config_inherit_stdout(wasi);
    wasi_config_inherit_stderr(wasi);
    wasi_config_preopen_dir(wasi, "/", "/", true);
    error = wasmtime_context_set_wasi(context, wasi);
    if (error) die("wasi", error);
    void *linker = wasmtime_linker_new(engine);
    error = wasmtime_linker_define_wasi(linker);
    if (error) die("linker", error);
    instance_t instance; void *trap = NULL;
    error = wasmtime_linker_instantiate(linker, context, module, &instance, &trap);
    if (error || trap) die("instantiate", error);
    extern_t start;
    if (!wasmtime_instance_export_get(context, &instance, "_start", 6, &start)) die("_start", NULL);
    error = wasmtime_func_call(context, &start.of.func, NULL, 0, NULL, 0, &trap);
    if (error) {
        int status;
        if (wasmtime_error_exit_status(error, &status)) _exit(status & 0xff);
        die("call", error);
    }
    if (trap) { fprintf(stderr, "launch: trap\n"); _exit(134); }
    _exit(0);
}
