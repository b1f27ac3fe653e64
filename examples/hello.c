/* The README's example: a C program compiled to a WebAssembly (WASI) module. */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    const char *user = getenv("USER");
    printf("Hello from WebAssembly! I was run as %s", argv[0]);
    for (int i = 1; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\nUSER=%s\n", user ? user : "(unset)");
    return 0;
}
