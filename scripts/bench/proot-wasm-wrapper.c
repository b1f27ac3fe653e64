/* `proot -q` accepts one emulator, which must be an ELF, and gives it QEMU's options
 * before the program's path: `-0 ARGV0`, `-E VAR=VALUE`, `-U VAR`. This wrapper drops
 * them and runs the emulator named at build time (-DEMULATOR=...) as
 * `EMULATOR PATH ARGS...`: the baseline bench.py runs wasm workloads under. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int i = 1;
    while (i + 1 < argc && (!strcmp(argv[i], "-0") || !strcmp(argv[i], "-E") ||
                            !strcmp(argv[i], "-U")))
        i += 2;
    argv[i - 1] = EMULATOR;
    execv(EMULATOR, argv + i - 1);
    perror(EMULATOR);
    return 127;
}
