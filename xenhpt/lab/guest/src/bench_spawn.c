/*
 * bench_spawn: fork + exec of a trivial static program + wait, for a fixed time (guest
 * clock), then one line with the score (UnixBench "execl"/"spawn").
 *
 *   bench_spawn SECONDS [PROGRAM]      (PROGRAM defaults to /opt/xenhpt/bin/bench_true)
 *   -> bench=spawn count=N seconds=S score=N/S unit=spawns/s
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t done;

static void stop(int signum) { (void)signum; done = 1; }

#include "bench_common.h"

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 5.0;
    const char *program = argc > 2 ? argv[2] : "/opt/xenhpt/bin/bench_true";
    struct itimerval timer = {{0, 0}, {(long)seconds, (long)((seconds - (long)seconds) * 1e6)}};
    unsigned long count = 0;
    struct sigaction action = {0};
    action.sa_handler = stop;  /* no SA_RESTART: the timer may interrupt waitpid */
    sigaction(SIGALRM, &action, NULL);
    mark_open();
    mark("begin");
    double start = now();
    setitimer(ITIMER_REAL, &timer, NULL);
    while (!done) {
        pid_t child = fork();
        if (child < 0) {
            perror("fork");
            return 1;
        }
        if (child == 0) {
            execl(program, program, (char *)NULL);
            _exit(127);
        }
        int status;
        while (waitpid(child, &status, 0) < 0)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "bench_spawn: %s failed (status %d)\n", program, status);
            return 1;
        }
        count++;
    }
    double elapsed = now() - start;
    mark("end");
    printf("bench=spawn count=%lu seconds=%.4f score=%.2f unit=spawns/s\n", count, elapsed,
           count / elapsed);
    return 0;
}
