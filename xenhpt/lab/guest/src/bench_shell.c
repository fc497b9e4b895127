/*
 * bench_shell: run a shell script again and again for a fixed time (guest clock), one
 * run after the other, then one line with the score in runs per minute (UnixBench
 * "looper" running tst.sh: sort, od | sort -n, grep | tee | wc on an 8 KiB text file).
 *
 *   bench_shell SECONDS [SCRIPT [WORKDIR]]
 *     SCRIPT defaults to /opt/xenhpt/bench/tst.sh, WORKDIR (where it runs) to
 *     /tmp/bench-shell
 *   -> bench=shell count=N seconds=S score=N*60/S unit=runs/min
 *
 * A run is never cut short: the last one ends after the time is up, and S includes it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 5.0;
    const char *script = argc > 2 ? argv[2] : "/opt/xenhpt/bench/tst.sh";
    const char *workdir = argc > 3 ? argv[3] : "/tmp/bench-shell";
    if (mkdir(workdir, 0755) < 0 && errno != EEXIST) {
        perror(workdir);
        return 1;
    }
    if (chdir(workdir) < 0) {
        perror(workdir);
        return 1;
    }
    unsigned long count = 0;
    mark_open();
    mark("begin");
    double start = now(), elapsed;
    do {
        pid_t child = fork();
        if (child < 0) {
            perror("fork");
            return 1;
        }
        if (child == 0) {
            execl("/bin/sh", "sh", script, (char *)NULL);
            _exit(127);
        }
        int status;
        if (waitpid(child, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
            fprintf(stderr, "bench_shell: %s failed (status %d)\n", script, status);
            return 1;
        }
        count++;
        elapsed = now() - start;
    } while (elapsed < seconds);
    mark("end");
    printf("bench=shell count=%lu seconds=%.4f score=%.2f unit=runs/min\n", count, elapsed,
           count * 60.0 / elapsed);
    return 0;
}
