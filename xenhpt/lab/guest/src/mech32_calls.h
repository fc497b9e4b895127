/* mech32_calls.h: one 32-bit system call through a chosen mechanism (included by the
 * 32-bit lab programs: each is one static binary built from one .c file).
 *
 * sysenter and 32-bit syscall return through the vDSO's landing pad (the kernel does not
 * keep the user's eip), which pops ebp, edx, ecx and returns: so we enter them exactly as
 * __kernel_vsyscall does, after a call whose return address brings us back here.
 */
#ifndef XENHPT_MECH32_CALLS_H
#define XENHPT_MECH32_CALLS_H

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

typedef long (*call32)(long, long, long, long);

/* The mechanism named int80, sysenter or syscall; NULL for anything else. */
static call32 mechanism_named(const char *name)
{
    if (!strcmp(name, "int80"))
        return via_int80;
    if (!strcmp(name, "sysenter"))
        return via_sysenter;
    if (!strcmp(name, "syscall"))
        return via_syscall;
    return NULL;
}

#endif
