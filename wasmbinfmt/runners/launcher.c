/* wasmbinfmt-launch: a module whose Cranelift code is in the cache, run in the exec'd
 * process itself (runners/launcher.py has the design). Being the caller's own exec, the
 * program has everything execve keeps, and its CPU time and memory count as that
 * process's, as natively. What it does not handle the same as the WASI runner, it hands
 * to that runner by exec'ing it, before any of the module's code has run.
 *
 * argv: ENTRY LIBC_CWD K CHECK... R M RUNNER... CALLER-ARGV...
 *   ENTRY     the compiled module (a cache entry of wasmtime's Cranelift code)
 *   LIBC_CWD  "-", or "R:ADDR" / "G:ADDR": wasi-libc's current directory is at ADDR, and
 *             relative paths go through it (R) or only getcwd reads it (G) (wasi_cwd.py)
 *   CHECK     K environment entries the cache's place depends on, as the tracer saw them:
 *             NAME=VALUE, or NAME for one unset; any other value here hands over
 *   RUNNER    M words: the WASI runner's argv up to the module's arguments, of which the
 *             first R start the runner and the rest are its options, "--" and the module
 * Written against wasmtime 50's C API (capi.py's layouts); compiled by launcher.py. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct { size_t size; char *data; } byte_vec;
typedef struct { size_t size; void **data; } pointer_vec;
typedef struct { uint64_t store_id; size_t priv; } instance_t;
typedef struct { uint64_t store_id; void *priv; } func_t;
typedef struct { uint64_t store_id; uint32_t p1, p2; } memory_t;
typedef struct { uint64_t store_id; uint32_t p1, p2, p3; } global_t;
typedef struct {
    uint8_t kind;
    union { func_t func; global_t global; memory_t memory; uint8_t size[24]; } of;
} extern_t;
typedef struct { uint8_t kind; union { int32_t i32; uint64_t size[3]; } of; } val_t;
enum { EXTERN_FUNC = 0, EXTERN_GLOBAL = 1, EXTERN_MEMORY = 3, I32 = 0, CRANELIFT = 1 };
typedef void *(*callback_t)(void *, void *, const val_t *, size_t, val_t *, size_t);

void *wasm_config_new(void);
void wasmtime_config_wasm_exceptions_set(void *, bool);
void wasmtime_config_wasm_tail_call_set(void *, bool);
void wasmtime_config_wasm_simd_set(void *, bool);
void wasmtime_config_wasm_bulk_memory_set(void *, bool);
void wasmtime_config_wasm_multi_value_set(void *, bool);
void wasmtime_config_wasm_reference_types_set(void *, bool);
void wasmtime_config_strategy_set(void *, uint8_t);
void wasmtime_config_max_wasm_stack_set(void *, size_t);
void wasmtime_config_async_stack_size_set(void *, size_t);
void *wasm_engine_new_with_config(void *);
void *wasmtime_module_deserialize_file(void *, const char *, void **);
void wasmtime_module_exports(void *, pointer_vec *);
const byte_vec *wasm_exporttype_name(const void *);
void *wasmtime_store_new(void *, void *, void *);
void *wasmtime_store_context(void *);
void *wasi_config_new(void);
bool wasi_config_set_argv(void *, size_t, const char **);
bool wasi_config_set_env(void *, size_t, const char **, const char **);
void wasi_config_inherit_stdin(void *);
void wasi_config_inherit_stdout(void *);
void wasi_config_inherit_stderr(void *);
bool wasi_config_preopen_dir(void *, const char *, const char *, bool);
void *wasmtime_context_set_wasi(void *, void *);
void *wasmtime_linker_new(void *);
void *wasmtime_linker_define_wasi(void *);
void wasmtime_linker_allow_shadowing(void *, bool);
void *wasm_valtype_new(uint8_t);
void wasm_valtype_vec_new(pointer_vec *, size_t, void **);
void wasm_valtype_vec_new_empty(pointer_vec *);
void *wasm_functype_new(pointer_vec *, pointer_vec *);
void *wasmtime_linker_define_func(void *, const char *, size_t, const char *, size_t,
                                  const void *, callback_t, void *, void (*)(void *));
void *wasmtime_linker_instantiate(void *, void *, void *, instance_t *, void **);
bool wasmtime_instance_export_get(void *, instance_t *, const char *, size_t, extern_t *);
void *wasmtime_func_call(void *, func_t *, const val_t *, size_t, val_t *, size_t, void **);
uint8_t *wasmtime_memory_data(void *, const memory_t *);
size_t wasmtime_memory_data_size(void *, const memory_t *);
void wasmtime_global_get(void *, const global_t *, val_t *);
void *wasmtime_global_set(void *, const global_t *, const val_t *);
void wasmtime_error_message(void *, byte_vec *);
void wasm_trap_message(void *, byte_vec *);
void wasm_trap_trace(void *, pointer_vec *);
uint32_t wasm_frame_func_index(void *);
size_t wasm_frame_module_offset(void *);
const byte_vec *wasmtime_frame_func_name(void *);
extern char **environ;

/* As in wasi.py and wasi_cwd.py. */
#define STACK_CAP (64UL << 20)
#define STACK_MARGIN (1UL << 20)
#define WASMTIME_DEFAULT_STACK (512UL << 10)
#define RUNTIME_DESCRIPTORS 4
#define TIGHT_LIMIT 256
#define LONGEST_SEEDED_CWD 4096
#define BACKTRACE_FRAMES 32
#define EXIT_TRAP 134
#define EXIT_CANNOT_RUN 126
static const char STACK_POINTER_EXPORT[] = "__wasmbinfmt_stack_pointer";
static const char *const WASI_MODULES[] = {"wasi_snapshot_preview1", "wasi_unstable"};

static char **runner;       /* the WASI runner's argv, for the hand-over */
static const char *module;  /* the module's path, as the runner would name it */
static bool held[3];        /* standard descriptors closed for us, held by /dev/null */
static struct rlimit files; /* RLIMIT_NOFILE as the program was started with */
static bool files_raised;

/* Exec the WASI runner with the same program, as it was started: before any of the
 * module's code ran. */
static void hand_over(void) {
    for (int fd = 0; fd < 3; fd++)
        if (held[fd]) close(fd);
    if (files_raised) setrlimit(RLIMIT_NOFILE, &files);
    execv(runner[0], runner);
    fprintf(stderr, "wasmbinfmt-wasi: %s: cannot start the WASI runner %s: %s\n", module,
            runner[0], strerror(errno));
    _exit(EXIT_CANNOT_RUN);
}

static bool utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 0 : (*p & 0xE0) == 0xC0 ? 1 : (*p & 0xF0) == 0xE0 ? 2
                : (*p & 0xF8) == 0xF0 ? 3 : -1;
        if (n < 0 || (n == 1 && *p < 0xC2) || (n == 3 && *p > 0xF4)) return false;
        unsigned first = *p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xC0) != 0x80) return false;
        /* overlong three- and four-byte forms, surrogates, beyond U+10FFFF */
        if (n == 2 && ((first == 0xE0 && p[-2] < 0xA0) || (first == 0xED && p[-2] >= 0xA0)))
            return false;
        if (n == 3 && ((first == 0xF0 && p[-3] < 0x90) || (first == 0xF4 && p[-3] >= 0x90)))
            return false;
    }
    return true;
}

static void *proc_exit(void *env, void *caller, const val_t *args, size_t nargs,
                       val_t *results, size_t nresults) {
    (void)env, (void)caller, (void)nargs, (void)results, (void)nresults;
    _exit(args[0].of.i32 & 0xff);  /* a native exit(N) gives the caller N & 0xff */
}

static void *engine_for_this_process(void) {
    void *config = wasm_config_new();
    wasmtime_config_wasm_exceptions_set(config, true);
    wasmtime_config_wasm_tail_call_set(config, true);
    wasmtime_config_wasm_simd_set(config, true);
    wasmtime_config_wasm_bulk_memory_set(config, true);
    wasmtime_config_wasm_multi_value_set(config, true);
    wasmtime_config_wasm_reference_types_set(config, true);
    wasmtime_config_strategy_set(config, CRANELIFT);
    struct rlimit stack;
    size_t soft = getrlimit(RLIMIT_STACK, &stack) == 0 && stack.rlim_cur != RLIM_INFINITY
                  && stack.rlim_cur <= STACK_CAP ? stack.rlim_cur : STACK_CAP;
    size_t depth = soft > WASMTIME_DEFAULT_STACK + STACK_MARGIN ? soft - STACK_MARGIN
                   : WASMTIME_DEFAULT_STACK;
    wasmtime_config_async_stack_size_set(config, depth + (1UL << 20));
    wasmtime_config_max_wasm_stack_set(config, depth);
    return wasm_engine_new_with_config(config);
}

/* -- the directories, as wasi_cwd.preopens lays them out ------------------------------- */

typedef struct { char *host, *guest; } mapping_t;
static mapping_t mapped[PATH_MAX / 2 + 4096];
static size_t count;

static void map(const char *host, const char *guest) {
    if (count == sizeof mapped / sizeof *mapped) hand_over();
    mapped[count].host = strdup(host);
    mapped[count++].guest = strdup(guest);
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void lay_out(const char *cwd, bool resolves_paths) {
    if (resolves_paths || strcmp(cwd, "/") == 0) {
        map("/", "/");
        return;
    }
    map(cwd, ".");
    char up[PATH_MAX], host[PATH_MAX];
    up[0] = 0;
    snprintf(host, sizeof host, "%s", cwd);
    for (;;) {
        char *slash = strrchr(host, '/');
        if (!slash) break;
        *slash = 0;
        strcat(up, up[0] ? "/.." : "..");
        map(host[0] ? host : "/", up);
        if (!host[0]) break;
    }
    DIR *root = opendir("/");
    if (!root) return;
    char **names = NULL;
    size_t n = 0, room = 0;
    for (struct dirent *d; (d = readdir(root));) {
        if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, "..")) continue;
        if (n == room) names = realloc(names, (room = room * 2 + 64) * sizeof *names);
        names[n++] = strdup(d->d_name);
    }
    closedir(root);
    qsort(names, n, sizeof *names, by_name);  /* Python's sorted(): by code point */
    for (size_t i = 0; i < n; i++) {
        char top[PATH_MAX], there[PATH_MAX * 2];
        struct stat st;
        snprintf(top, sizeof top, "/%s", names[i]);
        snprintf(there, sizeof there, "%s/%s", cwd, names[i]);
        if (stat(top, &st) == 0 && S_ISDIR(st.st_mode) && lstat(there, &st) != 0)
            map(top, top);
    }
}

/* Room for every preopen, as fit_descriptors makes it: the soft RLIMIT_NOFILE raised by
 * what the runtime holds, where the hard limit allows; past that, the preopens may cost the
 * program an eighth of its descriptors. Short of room for all, or under a tight limit,
 * the runner chooses which to keep. */
static void fit_descriptors(void) {
    if (getrlimit(RLIMIT_NOFILE, &files) != 0) hand_over();
    if (files.rlim_cur == RLIM_INFINITY) return;
    if (files.rlim_cur < TIGHT_LIMIT) hand_over();
    rlim_t wanted = files.rlim_cur + count + RUNTIME_DESCRIPTORS;
    rlim_t raised = files.rlim_max != RLIM_INFINITY && files.rlim_max < wanted
                    ? files.rlim_max : wanted;
    if (raised > files.rlim_cur) {
        struct rlimit more = {raised, files.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &more) == 0) files_raised = true;
        else raised = files.rlim_cur;
    }
    long room = (long)raised - (long)files.rlim_cur - RUNTIME_DESCRIPTORS;
    if (room < (long)count && (room < 0 ? 0 : room) + (long)(files.rlim_cur / 8) < (long)count)
        hand_over();
}

/* -- what the program ends with ---------------------------------------------------------- */

static void fail(const char *what, void *error) {
    byte_vec message = {0};
    wasmtime_error_message(error, &message);
    const char *line = message.data ? message.data : "";
    int length = (int)strcspn(line, "\n");
    fprintf(stderr, "wasmbinfmt-wasi: %s: %s%.*s\n", module, what, length, line);
    _exit(EXIT_CANNOT_RUN);
}

static void trapped(void *trap) {
    byte_vec message = {0};
    wasm_trap_message(trap, &message);
    /* The line saying what happened, as wasi.py's _first_line picks it. */
    char *text = strndup(message.data ? message.data : "", message.size);
    char *line = NULL, *save = NULL, *first = NULL;
    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        while (*l == ' ' || *l == '\t') l++;
        if (!*l) continue;
        if (!first) first = l;
        char *at = strstr(l, "wasm trap:");
        if (at) { line = at + strlen("wasm trap:"); while (*line == ' ') line++; break; }
    }
    line = line ? line : first ? first : "trap";
    size_t end = strlen(line);
    while (end && (line[end - 1] == ' ' || line[end - 1] == '\0')) end--;
    fprintf(stderr, "wasmbinfmt-wasi: %s: trap: %.*s", module, (int)end, line);
    pointer_vec frames = {0};
    wasm_trap_trace(trap, &frames);
    if (frames.size) fputs("\nwasm backtrace:", stderr);
    for (size_t i = 0; i < frames.size && i < BACKTRACE_FRAMES; i++) {
        const byte_vec *name = wasmtime_frame_func_name(frames.data[i]);
        fprintf(stderr, "\n    %2zu: %#8zx - ", i, wasm_frame_module_offset(frames.data[i]));
        if (name) fprintf(stderr, "%.*s", (int)name->size, name->data);
        else fprintf(stderr, "<wasm function %u>", wasm_frame_func_index(frames.data[i]));
    }
    if (frames.size > BACKTRACE_FRAMES)
        fprintf(stderr, "\n        ... %zu more frames", frames.size - BACKTRACE_FRAMES);
    fputc('\n', stderr);
    _exit(EXIT_TRAP);
}

/* As procstate.stay_on_current_cpu and no_wakeup_preemption, for the threads
 * wasmtime-wasi starts for file operations: hand-offs to them cost a switch, not a
 * wake-up of another CPU. */
static void schedule_as_the_runner(void) {
    cpu_set_t allowed, here;
    int cpu = sched_getcpu();
    if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && cpu >= 0
        && CPU_ISSET(cpu, &allowed)) {
        CPU_ZERO(&here);
        CPU_SET(cpu, &here);
        sched_setaffinity(0, sizeof here, &here);
    }
    if (sched_getscheduler(0) == SCHED_OTHER) {
        struct sched_param none = {0};
        sched_setscheduler(0, SCHED_BATCH, &none);
    }
}

static bool export_of(void *context, instance_t *instance, const char *name, int kind,
                      extern_t *item) {
    return wasmtime_instance_export_get(context, instance, name, strlen(name), item)
           && item->kind == kind;
}

/* wasi_cwd.seed: the module's __wasilibc_cwd at a copy of cwd below its stack. */
static void seed(void *context, instance_t *instance, uint32_t address, const char *cwd) {
    extern_t pointer, memory;
    size_t length = strlen(cwd) + 1;
    if (length > LONGEST_SEEDED_CWD
        || !export_of(context, instance, STACK_POINTER_EXPORT, EXTERN_GLOBAL, &pointer)
        || !export_of(context, instance, "memory", EXTERN_MEMORY, &memory))
        return;
    val_t sp;
    wasmtime_global_get(context, &pointer.of.global, &sp);
    int64_t string = ((int64_t)sp.of.i32 - (int64_t)length) & ~(int64_t)15;
    size_t size = wasmtime_memory_data_size(context, &memory.of.memory);
    if (string <= 0 || (uint64_t)string + length > size || (uint64_t)address + 4 > size) return;
    uint8_t *data = wasmtime_memory_data(context, &memory.of.memory);
    memcpy(data + string, cwd, length);
    sp.kind = I32;
    sp.of.i32 = (int32_t)string;
    void *error = wasmtime_global_set(context, &pointer.of.global, &sp);
    if (error) fail("", error);
    uint32_t little = (uint32_t)string;  /* wasm memory is little-endian, as this host */
    memcpy(data + address, &little, 4);
}

static bool exports_start(void *compiled) {
    pointer_vec exports = {0};
    wasmtime_module_exports(compiled, &exports);
    for (size_t i = 0; i < exports.size; i++) {
        const byte_vec *name = wasm_exporttype_name(exports.data[i]);
        if (name->size == 6 && !memcmp(name->data, "_start", 6)) return true;
    }
    return false;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fputs("wasmbinfmt-launch: started by wasmbinfmt's tracer, not by hand\n", stderr);
        return 2;
    }
    const char *entry = argv[1], *libc_cwd = argv[2];
    int at = 3, checks = atoi(argv[at++]);
    if (checks < 0 || at + checks + 2 > argc) return 2;
    char **check = argv + at;
    at += checks;
    int starts = atoi(argv[at]), words = atoi(argv[at + 1]);
    at += 2;
    if (starts < 1 || words < starts + 2 || at + words > argc) return 2;
    /* RUNNER... CALLER-ARGV... is the runner's argv as it stands, NULL-terminated. */
    runner = argv + at;
    char **caller = runner + words, **after = caller;
    int callers = argc - at - words;
    bool preserve_argv0 = false;
    char **o = runner + starts;
    for (; o < after && strcmp(*o, "--"); o++)
        if (!strcmp(*o, "--preserve-argv0")) preserve_argv0 = true;
    if (o + 1 >= after) return 2;
    module = o[1];

    /* The cache's place is what the tracer looked in, else the runner's to find. */
    for (int i = 0; i < checks; i++) {
        char *eq = strchr(check[i], '=');
        size_t n = eq ? (size_t)(eq - check[i]) : strlen(check[i]);
        char name[256];
        if (n >= sizeof name) hand_over();
        memcpy(name, check[i], n), name[n] = 0;
        const char *value = getenv(name);
        if (eq ? !value || strcmp(value, eq + 1) : value != NULL) hand_over();
    }

    /* The program's argv: MODULE (unless P) and the words after it, then the caller's. */
    size_t n = 0;
    const char **program = calloc((size_t)(after - o) + (size_t)callers + 2, sizeof *program);
    if (!preserve_argv0) program[n++] = module;
    for (char **w = o + 2; w < after; w++) program[n++] = *w;
    for (int i = 0; i < callers; i++) program[n++] = caller[i];
    if (!n) program[n++] = "";  /* the "" argv[0] Linux gives an empty argv */
    for (size_t i = 0; i < n; i++)
        if (!utf8(program[i])) hand_over();  /* the runner says which and refuses */
    size_t entries = 0;
    while (environ[entries]) entries++;
    const char **names = calloc(entries + 1, sizeof *names);
    const char **values = calloc(entries + 1, sizeof *values);
    size_t kept = 0;
    for (size_t i = 0; i < entries; i++) {
        char *eq = strchr(environ[i], '=');
        if (!eq) continue;  /* WASI's environ is NAME=VALUE strings */
        if (!utf8(environ[i])) hand_over();
        names[kept] = strndup(environ[i], (size_t)(eq - environ[i]));
        values[kept++] = eq + 1;
    }

    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd) || strlen(cwd) >= LONGEST_SEEDED_CWD) hand_over();
    uint32_t cwd_address = 0;
    bool seeded = libc_cwd[0] == 'R' || libc_cwd[0] == 'G';
    if (seeded) cwd_address = (uint32_t)strtoul(libc_cwd + 2, NULL, 10);
    lay_out(cwd, libc_cwd[0] == 'R');
    fit_descriptors();

    /* A standard descriptor closed for us stays closed for the program: held by /dev/null
     * here, so that the runtime's own files do not take it, and not inherited. */
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) >= 0) continue;
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        held[fd] = null == fd;
        if (!held[fd]) {
            if (null >= 0) close(null);
            hand_over();
        }
    }

    struct stat st;
    if (stat(entry, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()
        || st.st_mode & (S_IWGRP | S_IWOTH))
        hand_over();
    void *engine = engine_for_this_process(), *compiled = NULL;
    if (wasmtime_module_deserialize_file(engine, entry, &compiled)) hand_over();
    utimensat(AT_FDCWD, entry, NULL, 0);  /* used: its mtime orders eviction */
    if (!exports_start(compiled)) hand_over();  /* a reactor: the runner's */
    void *store = wasmtime_store_new(engine, NULL, NULL);
    void *context = wasmtime_store_context(store);
    void *wasi = wasi_config_new();
    if (!wasi_config_set_argv(wasi, n, program)
        || !wasi_config_set_env(wasi, kept, names, values))
        hand_over();
    if (!held[0]) wasi_config_inherit_stdin(wasi);
    if (!held[1]) wasi_config_inherit_stdout(wasi);
    if (!held[2]) wasi_config_inherit_stderr(wasi);
    for (size_t i = 0; i < count; i++)
        wasi_config_preopen_dir(wasi, mapped[i].host, mapped[i].guest, true);
    void *error = wasmtime_context_set_wasi(context, wasi);
    if (error) fail("", error);
    void *linker = wasmtime_linker_new(engine);
    if ((error = wasmtime_linker_define_wasi(linker))) fail("", error);
    wasmtime_linker_allow_shadowing(linker, true);
    for (size_t i = 0; i < sizeof WASI_MODULES / sizeof *WASI_MODULES; i++) {
        pointer_vec params, results;
        void *i32 = wasm_valtype_new(I32);
        wasm_valtype_vec_new(&params, 1, &i32);
        wasm_valtype_vec_new_empty(&results);
        void *type = wasm_functype_new(&params, &results);
        error = wasmtime_linker_define_func(linker, WASI_MODULES[i], strlen(WASI_MODULES[i]),
                                            "proc_exit", 9, type, proc_exit, NULL, NULL);
        if (error) fail("", error);
    }
    instance_t instance;
    void *trap = NULL;
    error = wasmtime_linker_instantiate(linker, context, compiled, &instance, &trap);
    if (error) hand_over();  /* an import the runner would name: nothing has run */
    if (trap) trapped(trap);
    if (seeded) seed(context, &instance, cwd_address, cwd);
    schedule_as_the_runner();
    extern_t start;
    if (!export_of(context, &instance, "_start", EXTERN_FUNC, &start)) hand_over();
    error = wasmtime_func_call(context, &start.of.func, NULL, 0, NULL, 0, &trap);
    if (error) fail("", error);
    if (trap) trapped(trap);
    _exit(0);
}
