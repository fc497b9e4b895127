/* Calls whose arguments xenhpt prints the way strace does (tests/test_syscalls_strace_host.py
 * runs this under both and compares): flags by name and unknown bits with strace's comment,
 * strings and arrays that run into unreadable memory, time arrays, interval timers. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <linux/close_range.h>
#include <linux/falloc.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

int main(void)
{
    int fds[2], st;
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *end = p + 4096;  /* the page after it is unmapped */
    munmap(end, 4096);
    syscall(SYS_pipe2, fds, 0x1);
    syscall(SYS_pipe2, fds, O_CLOEXEC | 0x1);
    syscall(SYS_unlinkat, AT_FDCWD, "/nonexist", 0x1);
    syscall(SYS_mprotect, p, 4096, 0x10);
    syscall(SYS_access, "/nonexist", 0x10);
    syscall(SYS_getrandom, p, 4, 0x10);
    syscall(SYS_wait4, -1, &st, 0x10, NULL);
    memcpy(end - 4, "/tmp", 4);
    syscall(SYS_unlink, end - 4);
    char **argv = (char **)(end - 16);
    argv[0] = "/bin/true";
    argv[1] = "x";
    syscall(SYS_execve, "/nonexist", argv, NULL);
    syscall(SYS_msync, p, 4096, MS_ASYNC | MS_INVALIDATE);
    syscall(SYS_msync, p, 4096, 0x10);
    syscall(SYS_mremap, p, 4096, 8192, 0x10);
    syscall(SYS_mlockall, 0x10);
    syscall(SYS_mlock2, p, 4096, 0x10);
    syscall(SYS_shutdown, 99, SHUT_RDWR);
    syscall(SYS_flock, 99, LOCK_EX | LOCK_NB);
    syscall(SYS_epoll_create1, 0x1);
    syscall(SYS_epoll_ctl, 99, EPOLL_CTL_DEL, 98, NULL);
    syscall(SYS_getrusage, 5, NULL);
    syscall(SYS_getpriority, PRIO_PGRP, 0);
    syscall(SYS_renameat2, AT_FDCWD, "/nonexist", AT_FDCWD, "/nonexist2", RENAME_NOREPLACE);
    syscall(SYS_memfd_create, "x", 0x100);
    syscall(SYS_unshare, 0x1);
    syscall(SYS_setns, 99, CLONE_NEWNET);
    syscall(SYS_inotify_init1, 0x1);
    syscall(SYS_timerfd_create, CLOCK_MONOTONIC, 0x10);
    syscall(SYS_eventfd2, 0, 0x2);
    syscall(SYS_close_range, 100, 200, 0x1);
    syscall(SYS_fallocate, 99, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, 0, 10);
    syscall(SYS_umount2, "/nonexist", MNT_DETACH | UMOUNT_NOFOLLOW);
    syscall(SYS_pidfd_open, 1, 0x1);
    syscall(SYS_fadvise64, 99, 0, 0, 99);
    struct timespec ts = {0, 1};
    syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
    syscall(SYS_nanosleep, &ts, p);
    struct timespec two[2] = {{1, 2}, {3, UTIME_NOW}};
    syscall(SYS_utimensat, AT_FDCWD, "/nonexist", two, 0);
    struct timespec omit[2] = {{0, UTIME_OMIT}, {-1, 5}};
    syscall(SYS_utimensat, AT_FDCWD, "/nonexist", omit, AT_SYMLINK_NOFOLLOW);
    syscall(SYS_utimensat, AT_FDCWD, "/nonexist", end - 16, 0);
    struct timeval tv[2] = {{1700000000, 5}, {0, 0}};
    syscall(SYS_utimes, "/nonexist", tv);
    syscall(SYS_futimesat, AT_FDCWD, "/nonexist", tv);
    struct utimbuf u = {1700000000, 0};
    syscall(SYS_utime, "/nonexist", &u);
    struct itimerval it = {{0, 0}, {0, 0}};
    syscall(SYS_setitimer, ITIMER_REAL, &it, NULL);
    syscall(SYS_getitimer, ITIMER_REAL, &it);
    syscall(SYS_getitimer, 7, &it);
    struct itimerspec its = {{0, 0}, {1, 0}};
    int t = syscall(SYS_timerfd_create, CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    syscall(SYS_timerfd_settime, t, TFD_TIMER_ABSTIME, &its, NULL);
    syscall(SYS_timerfd_gettime, t, &its);
    return 0;
}
