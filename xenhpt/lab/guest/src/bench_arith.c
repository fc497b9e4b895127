/*
 * bench_arith: an integer arithmetic loop with no system calls (UnixBench "arith"),
 * for a fixed time (guest clock), then one line with the score.
 *
 *   bench_arith SECONDS
 *   -> bench=arithmetic count=N seconds=S score=N/S unit=loops/s
 *
 * One loop is 1000 rounds of add/multiply/divide on ints the compiler cannot fold.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t done;
static volatile unsigned seed = 3;

static void stop(int signum) { (void)signum; done = 1; }

#include "bench_common.h"

static unsigned rounds(unsigned x)
{
    unsigned y = 0, z;
    for (int i = 2; i <= 1001; i++) {
        z = x;
        x = x + y;
        y = x * z + i;
        x = (y / (z | 1)) + (x % i);
    }
    return x + y;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 5.0;
    struct itimerval timer = {{0, 0}, {(long)seconds, (long)((seconds - (long)seconds) * 1e6)}};
    unsigned long count = 0;
    unsigned result = 0;
    signal(SIGALRM, stop);
    mark_open();
    mark("begin");
    double start = now();
    setitimer(ITIMER_REAL, &timer, NULL);
    while (!done) {
        result += rounds(seed);
        count++;
    }
    double elapsed = now() - start;
    mark("end");
    printf("bench=arithmetic count=%lu seconds=%.4f score=%.2f unit=loops/s check=%u\n",
           count, elapsed, count / elapsed, result & 0xff);
    return 0;
}
