/*
 * bench_syscall: UnixBench's "syscall" mix, close(dup(fd)); getpid(); getuid(); umask(022);
 * in a loop for a fixed time (guest clock), then one line with the score.
 *
 *   bench_syscall SECONDS
 *   -> bench=syscall count=N seconds=S score=N/S unit=loops/s
 *
 * The time is kept by an interval timer (SIGALRM), as UnixBench does, so the loop itself
 * makes no call but the four measured ones.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t done;

static void stop(int signum) { (void)signum; done = 1; }

#include "bench_common.h"

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 5.0;
    struct itimerval timer = {{0, 0}, {(long)seconds, (long)((seconds - (long)seconds) * 1e6)}};
    unsigned long count = 0;
    signal(SIGALRM, stop);
    mark_open();
    mark("begin");
    double start = now();
    setitimer(ITIMER_REAL, &timer, NULL);
    while (!done) {
        close(dup(0));
        getpid();
        getuid();
        umask(022);
        count++;
    }
    double elapsed = now() - start;
    mark("end");
    printf("bench=syscall count=%lu seconds=%.4f score=%.2f unit=loops/s\n", count, elapsed,
           count / elapsed);
    return 0;
}
