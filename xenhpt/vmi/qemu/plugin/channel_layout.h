/*
 * The byte layout of the file that xenhpt_capture.c shares with the tracer: a header
 * (the plugin's counters and the tracer's heartbeat), the tracer's configuration, and a
 * ring of records. This header is the one C statement of it; the Python side is
 * xenhpt/vmi/qemu/plugin_channel.py, and tests/test_plugin_layout.py compiles a program
 * against this header and compares every offset, size and constant with that module.
 *
 * SPDX-License-Identifier: LGPL-3.0-or-later
 */
#ifndef XENHPT_CHANNEL_LAYOUT_H
#define XENHPT_CHANNEL_LAYOUT_H

#include <stdint.h>

#define MAGIC "XHPTCAP1"
#define LAYOUT_VERSION 4
#define HEADER_SIZE 4096
#define CONFIG_SIZE (1u << 20)
#define MAX_NR 1024
#define MAX_RULES 8192
enum { ABI_X86_64 = 0, ABI_I386 = 1, ABIS = 2 }; /* record.abi, config.calls[abi] */
enum { MECH_NONE = 0, MECH_SYSCALL = 1, MECH_SYSENTER = 2, MECH_INT80 = 3, MECHS = 4 };

struct header {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t config_offset, config_size, ring_offset, ring_size;
    uint64_t max_vcpus;
    uint64_t reserved0;
    /* written by the plugin (offset 64) */
    uint64_t head;          /* bytes ever written to the ring */
    uint64_t records;       /* records written */
    uint64_t dropped;       /* records dropped because the ring was full */
    uint64_t applied_gen;   /* the configuration generation in effect */
    uint64_t instructions;  /* syscall instructions whose callback ran (armed: full trace) */
    uint64_t read_failures; /* guest reads that failed (unmapped pages) */
    uint64_t stale_stops;   /* times capture stopped because the tracer went silent */
    uint64_t flushes;       /* code-cache flushes to (un)instrument the exit point */
    uint64_t truncated;     /* captured regions cut because a record was full */
    uint64_t stale_age_ns;  /* how old the heartbeat was at the last stale stop */
    uint64_t qemu_exited;   /* QEMU ran its exit callbacks: no record will follow */
    uint64_t reserved1[13];
    /* written by the tracer (offset 256) */
    uint64_t tail;          /* bytes ever consumed */
    uint64_t config_gen;    /* bumped after each configuration write */
    uint64_t heartbeat_ns;  /* CLOCK_MONOTONIC: the tracer is alive */
    uint64_t owner_pid;     /* the tracer reading the ring (one at a time) */
};
_Static_assert(__builtin_offsetof(struct header, head) == 64, "header layout");
_Static_assert(__builtin_offsetof(struct header, tail) == 256, "header layout");

enum { WHEN_ENTRY = 1, WHEN_EXIT = 2 };
enum {
    HOW_CSTRING = 1, /* NUL-terminated string at args[arg], at most max bytes */
    HOW_FIXED = 2,   /* max bytes at args[arg] */
    HOW_BY_ARG = 3,  /* args[len_arg] * count bytes at args[arg], at most max */
    HOW_BY_RET = 4,  /* ret * count bytes at args[arg] (ret > 0), at most max */
    HOW_BY_DEREF = 5,/* (u32 at args[len_arg]) bytes at args[arg], at most max */
    HOW_STRINGS = 6, /* array of up to count pointers at args[arg], and their strings */
    HOW_STACK = 7,   /* max bytes at the user stack pointer (entry only) */
};

/* selected: bit 0 = capture this call; bit 1 = read the caller again at exit (exec);
 * bit 2 = it makes a child (fork, clone...): its return value joins a -f filter;
 * bit 3 = it never returns (exit, exit_group): no exit to wait for, and none to take from
 * a later task that gets the same task_struct address. */
struct call_spec { uint8_t selected; uint8_t n_rules; uint16_t first_rule; };
#define CALL_SELECTED 1u
#define CALL_REREAD_AT_EXIT 2u
#define CALL_FORKS 4u
#define CALL_NO_RETURN 8u
struct rule { uint8_t when, how, arg, len_arg; uint32_t max; uint32_t count; uint32_t reserved; };

/*
 * Selective tracing at the selected calls' kernel handlers (__x64_sys_openat(regs),
 * __ia32_sys_openat(regs), ...) instead of at every syscall instruction: calls outside the
 * selection never enter the plugin. The handler reads the call from pt_regs (its first
 * argument, kernel_view.first_argument; fields of the kernel's word size); the entry stub
 * the CPU arrived at (hence the mechanism and ABI) is the one the return address just
 * below pt_regs points into. Which pt_regs field holds which argument, and which register
 * holds __switch_to's next, is the tracer's table (trappoints.py), not the plugin's.
 */
#define MAX_HANDLERS 2048
#define MAX_STUBS 8
struct stub { uint64_t start; uint32_t mechanism, abi; };
struct handler_config {
    uint32_t enabled;            /* 0: instrument the instructions (full tracing) */
    uint32_t n_handlers;         /* entries of handlers[], sorted */
    uint32_t n_stubs;            /* entries of stubs[] */
    uint32_t regs_size;          /* sizeof(struct pt_regs) */
    uint64_t unused0;            /* (layout 3's switch_address: now config.switch_address) */
    uint64_t stub_span;          /* a return address this far past a stub is not in it */
    uint32_t unused1;            /* (layout 3's switch_next: now config.switch_next) */
    uint32_t regs_sp, regs_ip;   /* offsets in pt_regs (orig_ax: config.regs_orig_ax) */
    uint32_t reserved;
    /* Offsets in pt_regs of arguments 1..6, by ABI (an ABI no stub has: unused). */
    uint32_t regs_arguments[ABIS][6];
    struct stub stubs[MAX_STUBS];
    uint64_t handlers[MAX_HANDLERS];
};

/*
 * -p / --comm / -f as the tracer's CallFilter applies them (tracer/engine.py), so that the
 * plugin copies nothing for other tasks: a followed process's children are followed from
 * their first call (the child of a wanted fork, or any task whose parent is followed).
 */
#define MAX_FILTER_PIDS 64
struct task_filter {
    uint32_t enabled;   /* 0: every task */
    uint32_t follow;    /* -f */
    uint32_t n_pids;    /* -p: pids[0..n_pids) (0: any pid) */
    uint32_t use_comm;  /* --comm: comm */
    char comm[16];
    int32_t pids[MAX_FILTER_PIDS];
};

/*
 * What tells an x86-64 kernel from an i386 one, as the tracer found it in the profile: the
 * width of a kernel word, where the per-CPU area is, which register holds a kernel C
 * function's first argument, and where each entry path's arguments are (trappoints.py).
 * Registers are named by REG_* (x86-64 names; QEMU's i386 target calls rax eax, ...).
 */
enum { REG_NONE, REG_AX, REG_BX, REG_CX, REG_DX, REG_SI, REG_DI, REG_BP, REG_SP, REG_R8,
       REG_R9, REG_R10, REG_GENERAL };
#define ARG_AT 0x80u /* with a REG_*: the 32-bit word at the register (the user stack) */
enum { PERCPU_GS = 0, PERCPU_FS = 1 };
struct kernel_view {
    uint32_t word_size;       /* 8 or 4: pointers and pt_regs fields */
    uint32_t first_argument;  /* REG_*: the pt_regs pointer at the exit and handlers */
    uint32_t percpu_register; /* PERCPU_GS: GS base (KERNEL_GS_BASE in user mode);
                               * PERCPU_FS: FS base while FS holds percpu_selector */
    uint32_t percpu_selector;
    uint64_t kernel_start;    /* the lowest kernel address: a task is above it */
    uint64_t percpu_offsets;  /* the per-CPU bases by CPU number (the vCPU's), or 0 */
    /* Arguments 1..6 at a system-call instruction, by mechanism and ABI: REG_* | ARG_AT
     * each; a first one of REG_NONE: the kernel has no such entry path. */
    uint8_t arguments[MECHS][ABIS][6];
};

#define IDENTITY_POINTS 3
struct config {
    uint32_t enabled;
    uint32_t max_record;         /* bytes: the cap on one record */
    uint64_t exit_address;       /* syscall_exit_to_user_mode, or 0 */
    uint64_t current_offset;     /* per-CPU offset of the current task pointer */
    uint32_t task_pid, task_tgid, task_comm, task_real_parent;
    uint32_t regs_orig_ax, regs_ax, user32_cs, unknown_selected;
    uint64_t refresh_address;    /* bprm_execve, or 0: see on_refresh_point */
    uint64_t identity_address[IDENTITY_POINTS]; /* see on_identity_point; 0 = unused */
    /* __switch_to(prev, next), or 0: each vCPU's running task is `next` from there on
     * (full and selective tracing), and the register holding it (REG_*). */
    uint64_t switch_address;
    uint32_t switch_next;
    uint32_t reserved;
    uint32_t n_rules;
    uint32_t heartbeat_timeout_ms;
    struct call_spec calls[ABIS][MAX_NR];
    struct rule rules[MAX_RULES];
    struct handler_config handler;
    struct task_filter tasks;
    struct kernel_view kernel;
};
_Static_assert(__builtin_offsetof(struct config, calls) == 112, "config layout");
_Static_assert(sizeof(struct config) <= CONFIG_SIZE, "config layout");

enum { TYPE_PAD = 0, TYPE_ENTRY = 1, TYPE_EXIT = 2, TYPE_REFRESH = 3 };
#define FLAG_TASK_UNKNOWN 1u
/* Entry record: some argument memory was not mapped yet (demand paging: the kernel faults
 * it in during the call). Its exit record carries a second copy taken at the return. */
#define FLAG_RETRY_AT_EXIT 2u

struct record {
    uint32_t size; /* whole record with its regions, a multiple of 8 */
    uint8_t type, abi, mechanism, n_regions;
    uint32_t vcpu, flags;
    uint64_t ts_ns; /* CLOCK_REALTIME, like the tracer's time.time() */
    uint64_t task;
    int32_t pid, tid, ppid, reserved;
    char comm[16];
    uint64_t nr;
    uint64_t args[6];
    int64_t ret;
    uint64_t pc, sp, cr3;
};
_Static_assert(sizeof(struct record) == 152, "record layout");

#define REGION_CUT 1u        /* an unreadable page ended the copy early */
#define REGION_TERMINATED 2u /* a string whose NUL was copied: nothing after it matters */
#define REGION_FULL 4u       /* the record's size cap ended the copy early */
struct region { uint64_t addr; uint32_t len; uint32_t flags; };

#endif /* XENHPT_CHANNEL_LAYOUT_H */
