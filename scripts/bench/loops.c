/* Process and thread loops for bench.py: `loops fork N` forks N children that exit at
 * once, one after the other, and waits for each; `loops thread N` creates and joins N
 * threads. Under wasmbinfmt every fork and thread is a ptrace event: the loops measure
 * what each costs beside an exec. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void *nothing(void *arg) { return arg; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: loops fork|thread N\n");
        return 2;
    }
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) {
        if (!strcmp(argv[1], "fork")) {
            pid_t pid = fork();
            if (pid == 0)
                _exit(0);
            int status;
            if (pid < 0 || waitpid(pid, &status, 0) != pid || status != 0)
                return 1;
        } else {
            pthread_t thread;
            if (pthread_create(&thread, NULL, nothing, NULL) || pthread_join(thread, NULL))
                return 1;
        }
    }
    return 0;
}
