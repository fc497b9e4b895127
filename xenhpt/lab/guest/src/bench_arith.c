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

/*
 * Host-clock markers: with XENHPT_BENCH_MARK=/dev/ttyS0 (the lab's console, which QEMU
 * writes to a host file as it comes), "XENHPT-BENCH begin|end TAG" is written right before
 * and after the timed part, so the host can time it by its own clock. The guest's clock
 * stands still while a debugger holds the VM stopped, so a traced run's own score
 * understates what tracing costs in wall-clock time. TAG is $XENHPT_BENCH_TAG.
 */
static int mark_fd = -1;
static const char *mark_tag = "-";

static void mark_open(void)
{
    const char *device = getenv("XENHPT_BENCH_MARK");
    if (getenv("XENHPT_BENCH_TAG"))
        mark_tag = getenv("XENHPT_BENCH_TAG");
    if (device && *device)
        mark_fd = open(device, O_WRONLY | O_NOCTTY | O_CLOEXEC);
}

static void mark(const char *what)
{
    char line[128];
    if (mark_fd < 0)
        return;
    int n = snprintf(line, sizeof line, "XENHPT-BENCH %s %s\n", what, mark_tag);
    if (write(mark_fd, line, n) < 0)
        mark_fd = -1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

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
