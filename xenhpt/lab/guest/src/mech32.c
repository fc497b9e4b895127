/*
 * mech32: make the same three system calls through one chosen 32-bit mechanism,
 * so the tracer's records can be checked against what the program says it did.
 *
 *   mech32 int80|sysenter|syscall
 *
 * Each line of output is "name=return value". sysenter and 32-bit syscall return
 * through the vDSO's landing pad (the kernel does not keep the user's eip), which
 * pops ebp, edx, ecx and returns: so we enter them exactly as __kernel_vsyscall does,
 * after a call whose return address brings us back here.
 */
#include <stdio.h>
#include <string.h>

static long via_int80(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}

static long via_sysenter(long nr, long a, long b, long c)
{
    long ret;
    __asm__ volatile(
        "call 1f\n\t"
        "jmp 2f\n"
        "1:\n\t"
        "push %%ecx\n\t"
        "push %%edx\n\t"
        "push %%ebp\n\t"
        "movl %%esp, %%ebp\n\t"
        "sysenter\n"
        "2:\n"
        : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}

static long via_syscall(long nr, long a, long b, long c)
{
    long ret;
    /* 32-bit SYSCALL overwrites ecx with the return eip: argument 2 travels in ebp. */
    __asm__ volatile(
        "call 1f\n\t"
        "jmp 2f\n"
        "1:\n\t"
        "push %%ecx\n\t"
        "push %%edx\n\t"
        "push %%ebp\n\t"
        "movl %%ecx, %%ebp\n\t"
        "syscall\n"
        "2:\n"
        : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}

int main(int argc, char **argv)
{
    long (*call)(long, long, long, long);
    static const char missing[] = "/nonexistent/xenhpt-mech32";
    char message[64];

    if (argc != 2)
        return 2;
    if (!strcmp(argv[1], "int80"))
        call = via_int80;
    else if (!strcmp(argv[1], "sysenter"))
        call = via_sysenter;
    else if (!strcmp(argv[1], "syscall"))
        call = via_syscall;
    else
        return 2;
    snprintf(message, sizeof message, "hello from %s\n", argv[1]);
    long pid = call(20 /* getpid */, 0, 0, 0);
    long fd = call(5 /* open */, (long)missing, 0 /* O_RDONLY */, 0);
    long written = call(4 /* write */, 1, (long)message, (long)strlen(message));
    printf("getpid=%ld\nopen=%ld\nwrite=%ld\n", pid, fd, written);
    return 0;
}
