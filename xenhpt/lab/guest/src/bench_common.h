/* bench_common.h: what every lab benchmark program shares (included, not linked:
 * each program is one static binary built from one .c file). */
#ifndef XENHPT_BENCH_COMMON_H
#define XENHPT_BENCH_COMMON_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

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

#endif
