/*
 * mech32: make the same three system calls through one chosen 32-bit mechanism,
 * so the tracer's records can be checked against what the program says it did.
 *
 *   mech32 int80|sysenter|syscall
 *
 * Each line of output is "name=return value" (the calls: mech32_calls.h).
 */
#include <stdio.h>
#include <string.h>

#include "mech32_calls.h"

int main(int argc, char **argv)
{
    static const char missing[] = "/nonexistent/xenhpt-mech32";
    char message[64];

    if (argc != 2)
        return 2;
    call32 call = mechanism_named(argv[1]);
    if (!call)
        return 2;
    snprintf(message, sizeof message, "hello from %s\n", argv[1]);
    long pid = call(20 /* getpid */, 0, 0, 0);
    long fd = call(5 /* open */, (long)missing, 0 /* O_RDONLY */, 0);
    long written = call(4 /* write */, 1, (long)message, (long)strlen(message));
    printf("getpid=%ld\nopen=%ld\nwrite=%ld\n", pid, fd, written);
    return 0;
}
