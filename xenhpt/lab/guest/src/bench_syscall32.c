/*
 * bench_syscall32: bench_syscall's mix from a 32-bit program through one mechanism, for
 * the paper's per-mechanism table (int 0x80, sysenter, 32-bit syscall).
 *
 *   bench_syscall32 int80|sysenter|syscall SECONDS
 *   -> bench=syscall32 count=N seconds=S score=N/S unit=loops/s
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

static volatile sig_atomic_t done;

static void stop(int signum) { (void)signum; done = 1; }

#include "bench_common.h"
#include "mech32_calls.h"

/* i386 numbers: close, dup, getpid, getuid32, umask. */
enum { NR_CLOSE = 6, NR_DUP = 41, NR_GETPID = 20, NR_GETUID32 = 199, NR_UMASK = 60 };

int main(int argc, char **argv)
{
    call32 call = argc > 1 ? mechanism_named(argv[1]) : NULL;
    if (!call)
        return 2;
    double seconds = argc > 2 ? atof(argv[2]) : 5.0;
    struct itimerval timer = {{0, 0}, {(long)seconds, (long)((seconds - (long)seconds) * 1e6)}};
    unsigned long count = 0;
    signal(SIGALRM, stop);
    mark_open();
    mark("begin");
    double start = now();
    setitimer(ITIMER_REAL, &timer, NULL);
    while (!done) {
        call(NR_CLOSE, call(NR_DUP, 0, 0, 0), 0, 0);
        call(NR_GETPID, 0, 0, 0);
        call(NR_GETUID32, 0, 0, 0);
        call(NR_UMASK, 022, 0, 0);
        count++;
    }
    double elapsed = now() - start;
    mark("end");
    printf("bench=syscall32 count=%lu seconds=%.4f score=%.2f unit=loops/s\n", count, elapsed,
           count / elapsed);
    return 0;
}
