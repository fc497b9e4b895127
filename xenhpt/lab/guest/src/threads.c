/*
 * threads: a process with three threads, for checks that need real threads
 * (ps --threads, trace -p PID covering every thread of the process).
 *
 *   threads DELAY [LIFETIME]
 *
 * Prints the process id, waits DELAY seconds (time for a tracer to attach), then each of
 * two extra threads writes one line naming itself and lives LIFETIME seconds (default 1).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static int lifetime = 1;

static void *worker(void *arg)
{
    char line[64];
    int n = snprintf(line, sizeof line, "thread %s tid %ld\n", (const char *)arg,
                     (long)syscall(SYS_gettid));
    write(1, line, n);
    sleep(lifetime);
    return NULL;
}

int main(int argc, char **argv)
{
    pthread_t a, b;
    printf("%d\n", getpid());
    fflush(stdout);
    if (argc > 2)
        lifetime = atoi(argv[2]);
    sleep(argc > 1 ? atoi(argv[1]) : 0);
    pthread_create(&a, NULL, worker, "a");
    pthread_create(&b, NULL, worker, "b");
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    return 0;
}
