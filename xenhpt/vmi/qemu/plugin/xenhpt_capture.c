/*
 * xenhpt_capture — system-call capture inside QEMU, as a TCG plugin.
 *
 * Through the gdbstub every trapped call stops the whole VM and makes QEMU throw away
 * translated code; here the capture runs inside the emulator, in the vCPU thread, for
 * about a microsecond per call, and hands records to the xenhpt tracer through a ring in
 * a shared file that never blocks the guest (a full ring drops and counts).
 *
 * What it instruments (at translation time, so untouched code costs nothing):
 *  - every user instruction that enters the kernel for a system call: `syscall`
 *    (0f 05), `sysenter` (0f 34) and `int 0x80` (cd 80). QEMU hands us whole decoded
 *    instructions; we accept only legacy prefixes and (64-bit code) one REX byte in front
 *    of the opcode, so bytes that merely end in 0f 05 are never taken for a syscall;
 *  - the kernel's common syscall exit (syscall_exit_to_user_mode(struct pt_regs *regs)),
 *    whose address the tracer gives us once it knows the kernel's layout.
 * Selective tracing instruments instead the kernel handlers of the selected calls (and
 * the context switch, to know when a selected call is in flight on a vCPU): calls outside
 * the selection never enter the plugin (see on_handler).
 *
 * It runs in qemu-system-x86_64 and qemu-system-i386 alike: what tells an x86-64 kernel
 * from an i386 one (the width of its words, where its per-CPU area is, the registers each
 * entry path takes its arguments from) comes with the configuration (struct kernel_view),
 * from the tracer, which read it in the kernel's profile.
 *
 * Every point is armed or disarmed per vCPU through a scoreboard that QEMU tests inline
 * (conditional callbacks), so switching capture on, off or between modes needs no
 * re-translation, and an idle plugin costs a load and a branch per point, not a call.
 *
 * What it records is driven by the tracer's configuration (its layout: channel_layout.h; read
 * and written in Python by plugin_channel.py): which call numbers are wanted (selective
 * tracing filters here), the kernel offsets that name the calling task, and for each call a
 * few capture rules derived from xenhpt's syscall templates — copy the path string in
 * argument 0, the buffer in argument 1 with the length in argument 2 up to -s bytes, the
 * struct the kernel wrote at exit, ... The decoder then reads those bytes as they were at the call.
 *
 * Entry and exit are joined here only to know, at exit, the ABI and the arguments whose
 * memory the kernel filled in; the tracer does the real pairing, by task.
 *
 * SPDX-License-Identifier: LGPL-3.0-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "qemu_plugin_abi.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = XENHPT_QEMU_PLUGIN_API_VERSION;

/* The shared file's layout (header, configuration, records): channel_layout.h. */
#include "channel_layout.h"

/* ---- plugin state ------------------------------------------------------------------- */

/* The registers read: the general ones by their REG_* number (the configuration names
 * them so, channel_layout.h), then these. */
enum { R_CS = REG_GENERAL, R_CR3, R_GS_BASE, R_K_GS_BASE, R_FS, R_FS_BASE, R_COUNT };
/* What QEMU calls them: its x86_64 and i386 targets name the same registers differently
 * (NULL: that target has none). Which a guest kernel uses is the configuration's business. */
static const char *const names_x86_64[R_COUNT] = {
    [REG_AX] = "rax", [REG_BX] = "rbx", [REG_CX] = "rcx", [REG_DX] = "rdx",
    [REG_SI] = "rsi", [REG_DI] = "rdi", [REG_BP] = "rbp", [REG_SP] = "rsp",
    [REG_R8] = "r8", [REG_R9] = "r9", [REG_R10] = "r10", [R_CS] = "cs", [R_CR3] = "cr3",
    [R_GS_BASE] = "gs_base", [R_K_GS_BASE] = "k_gs_base", [R_FS] = "fs",
    [R_FS_BASE] = "fs_base"};
static const char *const names_i386[R_COUNT] = {
    [REG_AX] = "eax", [REG_BX] = "ebx", [REG_CX] = "ecx", [REG_DX] = "edx",
    [REG_SI] = "esi", [REG_DI] = "edi", [REG_BP] = "ebp", [REG_SP] = "esp",
    [R_CS] = "cs", [R_CR3] = "cr3", [R_GS_BASE] = "gs_base", [R_K_GS_BASE] = "k_gs_base",
    [R_FS] = "fs", [R_FS_BASE] = "fs_base"};
static const char *const *register_names = names_x86_64; /* the target's (install) */

struct vcpu_state;
/* One record being built in a vCPU's scratch buffer. */
struct builder {
    struct vcpu_state *v;
    struct record *r;
    uint8_t *end; /* the record's size cap */
    uint8_t *p;
    uint64_t mask; /* i386 pointers are 32-bit */
};

struct vcpu_state {
    GByteArray *buf;   /* memory reads land here */
    GByteArray *regs_buf; /* and register reads here (read_reg) */
    uint8_t *scratch;  /* one record is built here before it goes to the ring */
    /* An entry whose caller could not be read at the instruction (KPTI: the user page
     * tables do not map the per-CPU area) waits in scratch for the kernel's first C code
     * of the call, where it is named (on_identity_point). */
    bool deferred;
    /* The task this vCPU runs, as the last context switch named it (0: not known, read the
     * per-CPU current task): two guest reads fewer per record. */
    uint64_t running;
    struct builder deferred_builder;
    uint32_t deferred_missing;
};

struct pending {
    uint64_t task;
    uint8_t live, abi;
    uint32_t retry_rules; /* entry rules (bit = index in the call's list) that found nothing */
    uint64_t nr;
    uint64_t args[6];
    int32_t pid, tid, ppid; /* the caller, as read at entry: the exit reuses it */
    uint32_t flags;
    char comm[16];
};
#define PENDING_SLOTS 4096
#define PENDING_PROBES 64

static qemu_plugin_id_t plugin_id;
static struct header *hdr;
static struct config *shared_config;
static uint8_t *ring;
static uint64_t ring_size;
static struct config cfg;          /* our copy of the tracer's configuration */
static uint64_t exit_address;      /* what translation instruments right now */
static uint64_t refresh_address;
static uint64_t identity_address[IDENTITY_POINTS];
static struct qemu_plugin_register *reg_handles[R_COUNT];
static struct vcpu_state *vcpus;
static unsigned max_vcpus;
static struct pending pending[PENDING_SLOTS];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *shm_path;

/* Per vCPU, which points run their callback (non-zero: armed). QEMU tests these inline. */
struct arming {
    uint64_t insn;    /* syscall instructions (full tracing), and the KPTI identity points */
    uint64_t exit;    /* the exit and exec refresh points: a call may be in flight here */
    uint64_t handler; /* the selected calls' handlers and the context switch */
};
static struct qemu_plugin_scoreboard *arming;
static qemu_plugin_u64 arm_insn, arm_exit, arm_handler;
/* The handler points translation instruments right now (a copy: cfg may change under it,
 * and a change of this set always flushes the translated code). */
static uint64_t handlers_now[MAX_HANDLERS];
static uint32_t n_handlers_now;
static uint64_t switch_now;
/* The tasks a -f filter follows (pids, open addressing; emptied with each configuration). */
#define FOLLOWED_SLOTS 4096
static int32_t followed[FOLLOWED_SLOTS];

#define SCRATCH_SIZE (256u << 10)

static uint64_t now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Register values are appended to regs_buf and taken from its end: emptying the array
 * for every read (a dozen per call) costs more than the read, so it is emptied once in a
 * while. */
#define REGS_BUF_LIMIT 4096u

static uint64_t read_reg(struct vcpu_state *v, int which)
{
    uint64_t value = 0;
    if (!reg_handles[which]) {
        return 0;
    }
    if (v->regs_buf->len > REGS_BUF_LIMIT) {
        g_byte_array_set_size(v->regs_buf, 0);
    }
    unsigned int before = v->regs_buf->len;
    int n = qemu_plugin_read_register(reg_handles[which], v->regs_buf);
    if (n > 0 && v->regs_buf->len >= before + (unsigned int)n) {
        memcpy(&value, v->regs_buf->data + before, n < 8 ? (size_t)n : 8);
    }
    return value;
}

/* Up to len bytes at addr, page by page; returns how many were readable from the start. */
static size_t read_guest(struct vcpu_state *v, uint64_t addr, uint8_t *dst, size_t len,
                         bool stop_at_nul, bool *terminated)
{
    size_t done = 0;
    while (done < len) {
        uint64_t at = addr + done;
        size_t piece = 4096 - (at & 4095);
        if (piece > len - done) {
            piece = len - done;
        }
        if (!qemu_plugin_read_memory_vaddr(at, v->buf, piece)) {
            __atomic_add_fetch(&hdr->read_failures, 1, __ATOMIC_RELAXED);
            break;
        }
        if (stop_at_nul) {
            uint8_t *nul = memchr(v->buf->data, 0, piece);
            if (nul) {
                size_t keep = (size_t)(nul - v->buf->data) + 1;
                memcpy(dst + done, v->buf->data, keep);
                *terminated = true;
                return done + keep;
            }
        }
        memcpy(dst + done, v->buf->data, piece);
        done += piece;
    }
    return done;
}

static bool read_u64(struct vcpu_state *v, uint64_t addr, uint64_t *out)
{
    bool unused = false;
    *out = 0;
    return read_guest(v, addr, (uint8_t *)out, 8, false, &unused) == 8;
}

/* ---- the kernel's words (struct kernel_view: 8 bytes on x86-64, 4 on i386) ---------- */

static uint64_t word_mask(void)
{
    return cfg.kernel.word_size == 4 ? 0xffffffffu : ~(uint64_t)0;
}

/* A pointer or pt_regs field of the kernel's width. */
static bool read_word(struct vcpu_state *v, uint64_t addr, uint64_t *out)
{
    bool unused = false;
    uint32_t size = cfg.kernel.word_size;
    *out = 0;
    return read_guest(v, addr & word_mask(), (uint8_t *)out, size, false, &unused) == size;
}

static int64_t signed_word(uint64_t word)
{
    return cfg.kernel.word_size == 4 ? (int64_t)(int32_t)word : (int64_t)word;
}

static bool kernel_address(uint64_t address)
{
    return address >= cfg.kernel.kernel_start && address <= word_mask();
}

/* ---- configuration ------------------------------------------------------------------ */

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
static void on_idle(qemu_plugin_id_t id, unsigned int vcpu);

static void install_callbacks(qemu_plugin_id_t id)
{
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_vcpu_idle_cb(id, on_idle);
}

static void on_exit_qemu(qemu_plugin_id_t id, void *userdata);

/* qemu_plugin_reset drops every callback we had: put back all but vCPU init (done). */
static void reinstall(qemu_plugin_id_t id)
{
    install_callbacks(id);
    qemu_plugin_register_atexit_cb(id, on_exit_qemu, NULL);
}

static bool general_register(uint32_t reg)
{
    return reg != REG_NONE && reg < REG_GENERAL;
}

/* A kernel word at `offset` lies inside a struct of `size` bytes. */
static bool word_within(uint32_t offset, uint32_t word, uint32_t size)
{
    return offset <= size && size - offset >= word;
}

/* The handler mode's part of a configuration: pt_regs fields inside pt_regs, stubs that
 * name a mechanism and an ABI the tables have. */
static bool handler_config_valid(const struct config *c)
{
    const struct handler_config *h = &c->handler;
    uint32_t word = c->kernel.word_size;
    if (h->n_handlers > MAX_HANDLERS || h->n_stubs > MAX_STUBS || h->regs_size == 0
        || h->regs_size > 512 || !c->switch_address
        || !word_within(h->regs_sp, word, h->regs_size)
        || !word_within(h->regs_ip, word, h->regs_size)
        || !word_within(c->regs_orig_ax, word, h->regs_size)) {
        return false;
    }
    for (int abi = 0; abi < ABIS; abi++) {
        for (int i = 0; i < 6; i++) {
            if (!word_within(h->regs_arguments[abi][i], word, h->regs_size)) {
                return false;
            }
        }
    }
    for (uint32_t i = 0; i < h->n_stubs; i++) {
        if (h->stubs[i].mechanism == MECH_NONE || h->stubs[i].mechanism >= MECHS
            || h->stubs[i].abi >= ABIS) {
            return false;
        }
    }
    return true;
}

static bool config_valid(const struct config *c)
{
    const struct kernel_view *k = &c->kernel;
    if ((k->word_size != 4 && k->word_size != 8) || !general_register(k->first_argument)
        || k->percpu_register > PERCPU_FS) {
        return false;
    }
    for (int m = 0; m < MECHS; m++) {
        for (int abi = 0; abi < ABIS; abi++) {
            for (int i = 0; i < 6; i++) {
                if ((k->arguments[m][abi][i] & ~ARG_AT) >= REG_GENERAL) {
                    return false;
                }
            }
        }
    }
    if (c->n_rules > MAX_RULES || c->max_record < sizeof(struct record)
        || c->max_record > SCRATCH_SIZE || c->max_record > ring_size / 4) {
        return false;
    }
    for (int abi = 0; abi < ABIS; abi++) {
        for (int nr = 0; nr < MAX_NR; nr++) {
            const struct call_spec *s = &c->calls[abi][nr];
            if ((uint32_t)s->first_rule + s->n_rules > c->n_rules) {
                return false;
            }
        }
    }
    if (c->tasks.enabled && c->tasks.n_pids > MAX_FILTER_PIDS) {
        return false;
    }
    if (c->switch_address && !general_register(c->switch_next)) {
        return false;
    }
    return !c->handler.enabled || handler_config_valid(c);
}

static bool handler_mode(void)
{
    return cfg.enabled && cfg.handler.enabled;
}

/* Arm each vCPU's points for the configuration in effect. A selective trace arms its exit
 * per vCPU only while a selected call is in flight there (on_handler, on_switch). The
 * context switch runs whenever capture does: what each vCPU runs is known from it (the
 * running task, forgotten first: switches were not followed while it was disarmed). */
static void arm_all(void)
{
    bool full = cfg.enabled && !cfg.handler.enabled;
    bool switches = cfg.enabled && cfg.switch_address; /* (the handler mode requires it) */
    for (unsigned i = 0; i < max_vcpus; i++) {
        __atomic_store_n(&vcpus[i].running, 0, __ATOMIC_RELAXED);
        qemu_plugin_u64_set(arm_insn, i, full);
        qemu_plugin_u64_set(arm_exit, i, full);
        qemu_plugin_u64_set(arm_handler, i, switches);
    }
}

/* Make every vCPU run its next syscall instruction's callback, which takes a new
 * configuration (and may flush translated code: only a vCPU may ask for that). */
static void wake_all(void)
{
    for (unsigned i = 0; i < max_vcpus; i++) {
        qemu_plugin_u64_set(arm_insn, i, 1);
    }
}

static bool same_handlers(const struct config *c)
{
    uint32_t n = c->handler.enabled ? c->handler.n_handlers : 0;
    return n == n_handlers_now
           && memcmp(c->handler.handlers, handlers_now, n * sizeof(uint64_t)) == 0
           && c->switch_address == switch_now;
}

/*
 * The tracer writes the whole configuration, then bumps config_gen; we copy it once and
 * acknowledge. A change of the points to instrument needs the translated code flushed:
 * qemu_plugin_reset does that, asynchronously, and only a vCPU may call it; the watcher
 * thread (can_flush false) takes every other change itself and wakes the vCPUs for those.
 */
static void check_config(bool can_flush)
{
    uint64_t gen = __atomic_load_n(&hdr->config_gen, __ATOMIC_ACQUIRE);
    if (gen == __atomic_load_n(&hdr->applied_gen, __ATOMIC_RELAXED)) {
        return;
    }
    pthread_mutex_lock(&lock);
    if (gen != hdr->applied_gen) {
        static struct config incoming;
        memcpy(&incoming, shared_config, sizeof(incoming));
        if (!config_valid(&incoming)) {
            incoming.enabled = 0; /* refuse it whole rather than read out of bounds */
        }
        bool flush = incoming.exit_address != cfg.exit_address
                     || incoming.refresh_address != cfg.refresh_address
                     || memcmp(incoming.identity_address, cfg.identity_address,
                               sizeof(cfg.identity_address)) != 0
                     || !same_handlers(&incoming);
        if (flush && !can_flush) {
            wake_all();
            pthread_mutex_unlock(&lock);
            return;
        }
        memcpy(&cfg, &incoming, sizeof(cfg));
        memset(pending, 0, sizeof(pending));
        memset(followed, 0, sizeof(followed));
        /* Instrumented whether capture is on or not: arm_all() decides what runs. */
        __atomic_store_n(&exit_address, cfg.exit_address, __ATOMIC_RELEASE);
        __atomic_store_n(&refresh_address, cfg.refresh_address, __ATOMIC_RELEASE);
        for (int i = 0; i < IDENTITY_POINTS; i++) {
            __atomic_store_n(&identity_address[i], cfg.identity_address[i], __ATOMIC_RELEASE);
        }
        n_handlers_now = cfg.handler.enabled ? cfg.handler.n_handlers : 0;
        memcpy(handlers_now, cfg.handler.handlers, n_handlers_now * sizeof(uint64_t));
        switch_now = cfg.switch_address;
        arm_all();
        __atomic_store_n(&hdr->applied_gen, gen, __ATOMIC_RELEASE);
        if (flush) {
            hdr->flushes++;
            qemu_plugin_reset(plugin_id, reinstall);
        }
    }
    pthread_mutex_unlock(&lock);
}

/* A tracer killed without a goodbye must not leave capture running forever. */
static bool tracer_alive(void)
{
    uint64_t beat = __atomic_load_n(&hdr->heartbeat_ns, __ATOMIC_RELAXED);
    uint64_t limit = (uint64_t)cfg.heartbeat_timeout_ms * 1000000u;
    uint64_t now = now_ns(CLOCK_MONOTONIC_COARSE); /* (to the tick: limit is seconds) */
    if (limit == 0 || now - beat < limit) {
        return true;
    }
    /* The tracer's store may be caught half done (seen as 0 while Python wrote it): a
     * stale beat must still be stale when read again a moment later. */
    for (int again = 0; again < 1000; again++) {
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        beat = __atomic_load_n(&hdr->heartbeat_ns, __ATOMIC_RELAXED);
        if (now - beat < limit || (int64_t)(now - beat) < 0) {
            return true;
        }
    }
    pthread_mutex_lock(&lock);
    if (cfg.enabled) {
        hdr->stale_age_ns = now - beat;
        cfg.enabled = 0;
        arm_all();
        hdr->stale_stops++;
    }
    pthread_mutex_unlock(&lock);
    return false;
}

/* ---- records ------------------------------------------------------------------------ */

static struct vcpu_state *vcpu_state(unsigned vcpu)
{
    struct vcpu_state *v = &vcpus[vcpu < max_vcpus ? vcpu : 0];
    if (!v->buf) {
        v->buf = g_byte_array_new();
        v->regs_buf = g_byte_array_new();
        v->scratch = calloc(1, SCRATCH_SIZE);
    }
    return v;
}

/* This vCPU's per-CPU base. x86-64: whichever GS base is the kernel's (KERNEL_GS_BASE in
 * user mode, before swapgs; GS_BASE in the kernel). i386: the FS base once the kernel's
 * entry code loaded its per-CPU selector; in user mode, FS is the user's, and the base
 * is the kernel's table of them, by CPU number (QEMU's vCPU index). */
static bool percpu_base(struct vcpu_state *v, bool user_mode, uint64_t *base)
{
    const struct kernel_view *k = &cfg.kernel;
    if (k->percpu_register == PERCPU_GS) {
        *base = read_reg(v, user_mode ? R_K_GS_BASE : R_GS_BASE);
        if (!kernel_address(*base)) {
            *base = read_reg(v, user_mode ? R_GS_BASE : R_K_GS_BASE);
        }
        if (kernel_address(*base)) {
            return true;
        }
    } else if (!user_mode && (read_reg(v, R_FS) & 0xffff) == k->percpu_selector) {
        *base = read_reg(v, R_FS_BASE);
        return true;
    }
    uint64_t cpu = (uint64_t)(v - vcpus);
    return k->percpu_offsets && read_word(v, k->percpu_offsets + cpu * k->word_size, base);
}

/* The task running on this vCPU: the one the last context switch named, else the
 * per-CPU current task (which only __switch_to changes once the CPU is up). */
static uint64_t current_task(struct vcpu_state *v, bool user_mode)
{
    uint64_t base = 0, task = __atomic_load_n(&v->running, __ATOMIC_RELAXED);
    if (task) {
        return task;
    }
    if (!percpu_base(v, user_mode, &base)
        || !read_word(v, base + cfg.current_offset, &task) || !kernel_address(task)) {
        return 0;
    }
    return task;
}

/*
 * Several fields of one kernel object: one guest read when they lie within
 * FIELD_SPAN_MAX bytes of each other, else one read each. Every guest read is a page walk
 * through QEMU's debug path, the biggest part of the capture's cost per call.
 */
#define FIELD_SPAN_MAX 1024u
struct field {
    uint32_t offset, size; /* size <= 16 */
    void *out;
};

static bool read_fields(struct vcpu_state *v, uint64_t object, struct field *fields, int n)
{
    uint8_t span[FIELD_SPAN_MAX];
    bool unused = false;
    uint32_t low = UINT32_MAX, high = 0;
    for (int i = 0; i < n; i++) {
        low = fields[i].offset < low ? fields[i].offset : low;
        high = fields[i].offset + fields[i].size > high ? fields[i].offset + fields[i].size
                                                        : high;
    }
    if (high - low <= FIELD_SPAN_MAX) {
        if (read_guest(v, object + low, span, high - low, false, &unused) != high - low) {
            return false;
        }
        for (int i = 0; i < n; i++) {
            memcpy(fields[i].out, span + fields[i].offset - low, fields[i].size);
        }
        return true;
    }
    for (int i = 0; i < n; i++) {
        if (read_guest(v, object + fields[i].offset, fields[i].out, fields[i].size, false,
                       &unused) != fields[i].size) {
            return false;
        }
    }
    return true;
}

/* Who the task is: pid, tgid and real_parent are neighbours in task_struct, comm a few
 * hundred bytes on (one read), then the parent's tgid. */
static void read_identity(struct vcpu_state *v, uint64_t task, struct record *r)
{
    uint64_t parent = 0, parent_tgid = 0;
    struct field identity[] = {
        {cfg.task_pid, 4, &r->tid},
        {cfg.task_tgid, 4, &r->pid},
        {cfg.task_comm, 16, r->comm},
        {cfg.task_real_parent, cfg.kernel.word_size, &parent},
    };
    r->task = task;
    r->flags |= FLAG_TASK_UNKNOWN;
    if (!task || !read_fields(v, task, identity, 4)) {
        r->pid = r->tid = -1;
        memset(r->comm, 0, sizeof(r->comm));
        return;
    }
    if (read_u64(v, (parent & word_mask()) + cfg.task_tgid, &parent_tgid)) {
        r->ppid = (int32_t)parent_tgid;
    }
    r->flags &= ~FLAG_TASK_UNKNOWN;
}

static void add_region(struct builder *b, uint64_t addr, uint64_t len, bool cstring)
{
    addr &= b->mask;
    if (addr == 0 || len == 0 || b->r->n_regions == 255) {
        return;
    }
    struct region *reg = (struct region *)b->p;
    uint8_t *data = b->p + sizeof(*reg);
    uint32_t flags = 0;
    if (data >= b->end) {
        __atomic_add_fetch(&hdr->truncated, 1, __ATOMIC_RELAXED);
        return;
    }
    if (len > (uint64_t)(b->end - data)) {
        len = (uint64_t)(b->end - data);
        flags |= REGION_FULL;
        __atomic_add_fetch(&hdr->truncated, 1, __ATOMIC_RELAXED);
    }
    bool terminated = false;
    size_t got = read_guest(b->v, addr, data, len, cstring, &terminated);
    if (got == 0) {
        return; /* nothing readable: the decoder finds out the same way, later */
    }
    if (terminated) {
        flags = REGION_TERMINATED;
    } else if (got < len) {
        flags |= REGION_CUT;
    }
    reg->addr = addr;
    reg->len = (uint32_t)got;
    reg->flags = flags;
    b->p = data + ((got + 7) & ~(size_t)7);
    b->r->n_regions++;
}

/* Copy what the call's rules for this moment ask for; returns the rules (as bits) whose
 * memory was not readable at all. `only`, if not 0, limits the work to those rules. */
static uint32_t apply_rules(struct builder *b, uint64_t nr, int when, const uint64_t *args,
                            int64_t ret, uint64_t sp, uint32_t only)
{
    const struct call_spec *spec = &cfg.calls[b->r->abi][nr];
    uint32_t missing = 0;
    for (unsigned i = 0; i < spec->n_rules; i++) {
        const struct rule *rule = &cfg.rules[spec->first_rule + i];
        if (rule->when != when || rule->arg > 5 || rule->len_arg > 5) {
            continue;
        }
        if (only && (i >= 32 || !(only & (1u << i)))) {
            continue;
        }
        uint64_t at = args[rule->arg], len = 0;
        uint8_t before = b->r->n_regions;
        bool part_missing = false; /* an argv string that could not be read */
        switch (rule->how) {
        case HOW_CSTRING:
            add_region(b, at, rule->max, true);
            break;
        case HOW_FIXED:
            add_region(b, at, rule->max, false);
            break;
        case HOW_BY_ARG:
            len = (args[rule->len_arg] & b->mask) * (rule->count ? rule->count : 1);
            add_region(b, at, len < rule->max ? len : rule->max, false);
            break;
        case HOW_BY_RET:
            if (ret > 0) {
                len = (uint64_t)ret * (rule->count ? rule->count : 1);
                add_region(b, at, len < rule->max ? len : rule->max, false);
            }
            break;
        case HOW_BY_DEREF: {
            uint64_t word = 0;
            bool unused = false;
            if (read_guest(b->v, args[rule->len_arg] & b->mask, (uint8_t *)&word, 4, false,
                           &unused) == 4) {
                len = (uint32_t)word;
                add_region(b, at, len < rule->max ? len : rule->max, false);
            }
            break;
        }
        case HOW_STRINGS: {
            unsigned word = b->mask == 0xffffffffu ? 4 : 8;
            uint8_t *array = b->p + sizeof(struct region);
            uint8_t before = b->r->n_regions;
            add_region(b, at, (uint64_t)rule->count * word, false);
            if (b->r->n_regions == before) {
                break;
            }
            uint32_t got = ((struct region *)(array - sizeof(struct region)))->len;
            for (uint32_t k = 0; k + word <= got; k += word) {
                uint64_t ptr = 0;
                memcpy(&ptr, array + k, word);
                if (ptr == 0) {
                    break;
                }
                uint8_t strings_before = b->r->n_regions;
                add_region(b, ptr, rule->max, true);
                part_missing |= b->r->n_regions == strings_before;
            }
            break;
        }
        case HOW_STACK:
            add_region(b, sp, rule->max, false);
            break;
        }
        if ((b->r->n_regions == before || part_missing) && (at & b->mask) && i < 32
            && rule->how != HOW_STACK) {
            missing |= 1u << i;
        }
    }
    return missing;
}

static bool ring_put(const struct record *r)
{
    /* The caller holds the lock: one producer at a time, however many vCPUs. */
    uint64_t head = hdr->head, tail = __atomic_load_n(&hdr->tail, __ATOMIC_ACQUIRE);
    uint64_t pos = head & (ring_size - 1), to_end = ring_size - pos;
    uint64_t need = r->size + (to_end < r->size ? to_end : 0);
    if (ring_size - (head - tail) < need) {
        hdr->dropped++;
        return false;
    }
    if (to_end < r->size) { /* no record wraps: pad to the end, start over at 0 */
        struct record *pad = (struct record *)(ring + pos);
        pad->size = (uint32_t)to_end;
        pad->type = TYPE_PAD;
        head += to_end;
        pos = 0;
    }
    memcpy(ring + pos, r, r->size);
    __atomic_store_n(&hdr->records, hdr->records + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&hdr->head, head + r->size, __ATOMIC_RELEASE);
    return true;
}

static struct record *start_record(struct vcpu_state *v, struct builder *b, int type,
                                   unsigned vcpu, int abi)
{
    struct record *r = (struct record *)v->scratch;
    memset(r, 0, sizeof(*r));
    r->type = (uint8_t)type;
    r->abi = (uint8_t)abi;
    r->vcpu = vcpu;
    r->ts_ns = now_ns(CLOCK_REALTIME);
    r->pid = r->tid = r->ppid = -1;
    b->v = v;
    b->r = r;
    b->p = v->scratch + sizeof(*r);
    b->end = v->scratch + cfg.max_record;
    b->mask = abi == ABI_I386 ? 0xffffffffu : ~(uint64_t)0;
    return r;
}

static void finish_record(struct builder *b)
{
    b->r->size = (uint32_t)(b->p - (uint8_t *)b->r);
}

/* Finish a record that needs nothing else under the lock, and hand it to the ring. */
static void publish(struct builder *b)
{
    finish_record(b);
    pthread_mutex_lock(&lock);
    ring_put(b->r);
    pthread_mutex_unlock(&lock);
}

static struct pending *pending_slot(uint64_t task, bool insert)
{
    unsigned start = (unsigned)((task >> 6) * 0x9E3779B1u) % PENDING_SLOTS;
    struct pending *free_slot = NULL;
    for (unsigned i = 0; i < PENDING_PROBES; i++) {
        struct pending *p = &pending[(start + i) % PENDING_SLOTS];
        if (p->task == task) {
            return p;
        }
        if (!p->live && !free_slot) {
            free_slot = p;
        }
        if (p->task == 0) {
            break; /* never used: the task is not further on */
        }
    }
    return insert ? free_slot : NULL;
}

/* ---- the two instrumentation points -------------------------------------------------- */

static bool identity_points(void);
static void put_entry(struct builder *b, uint32_t missing);
static bool task_wanted_now(const struct record *r);

/* An entry still waiting for its caller's name never got to the kernel's C code (a
 * 32-bit syscall on a kernel without IA32 emulation): it goes out as it is. */
static void flush_deferred(struct vcpu_state *v)
{
    if (v->deferred) {
        v->deferred = false;
        put_entry(&v->deferred_builder, v->deferred_missing);
    }
}

/* The rest of an entry record, wherever it was taken: who called (false: a task the
 * filter does not want, nothing copied), then the memory its rules ask for; `missing`
 * gets the rules whose memory was not mapped yet (copied again at the exit). */
static bool name_and_copy(struct builder *b, uint64_t task, bool known, uint32_t *missing)
{
    struct record *r = b->r;
    read_identity(b->v, task, r);
    if (!task_wanted_now(r)) {
        return false;
    }
    *missing = known ? apply_rules(b, r->nr, WHEN_ENTRY, r->args, 0, r->sp, 0) : 0;
    if (*missing) {
        r->flags |= FLAG_RETRY_AT_EXIT;
    }
    finish_record(b);
    return true;
}

static void on_syscall_insn(unsigned int vcpu, void *udata)
{
    /* udata: the instruction's address, shifted, with the mechanism in the low bits. */
    int mechanism = (int)((uintptr_t)udata & 3);
    __atomic_add_fetch(&hdr->instructions, 1, __ATOMIC_RELAXED);
    check_config(true);
    if (!cfg.enabled || cfg.handler.enabled) {
        qemu_plugin_u64_set(arm_insn, vcpu, 0); /* woken for a configuration: done */
        return;
    }
    if (!tracer_alive()) {
        return;
    }
    struct vcpu_state *v = vcpu_state(vcpu);
    flush_deferred(v);
    uint64_t cs = read_reg(v, R_CS) & 0xffff;
    int abi = (mechanism == MECH_SYSCALL && cs != cfg.user32_cs) ? ABI_X86_64 : ABI_I386;
    const uint8_t *sources = cfg.kernel.arguments[mechanism][abi];
    if (sources[0] == REG_NONE) {
        return; /* the kernel has no such entry path (`syscall` on an i386 kernel: #UD) */
    }
    uint64_t nr = read_reg(v, REG_AX);
    if (abi == ABI_I386) {
        nr &= 0xffffffffu;
    }
    bool known = nr < MAX_NR;
    if (known ? !(cfg.calls[abi][nr].selected & CALL_SELECTED) : !cfg.unknown_selected) {
        return;
    }
    struct builder b;
    struct record *r = start_record(v, &b, TYPE_ENTRY, vcpu, abi);
    r->mechanism = (uint8_t)mechanism;
    r->nr = nr;
    r->pc = (uint64_t)(uintptr_t)udata >> 2;
    r->sp = read_reg(v, REG_SP) & b.mask;
    r->cr3 = read_reg(v, R_CR3);
    /* Where the kernel's entry path takes each argument (trappoints.py): a register, or a
     * word on the user stack (the 32-bit fast paths' sixth: [esp] after `syscall`, [ebp]
     * after `sysenter`, where the vDSO keeps the user's esp in ebp). */
    for (int i = 0; i < 6; i++) {
        uint64_t value = read_reg(v, sources[i] & ~ARG_AT) & b.mask;
        if (sources[i] & ARG_AT) {
            uint64_t word = 0;
            bool unused = false;
            read_guest(v, value, (uint8_t *)&word, 4, false, &unused);
            value = word;
        }
        r->args[i] = value;
    }
    uint32_t missing = 0;
    if (!name_and_copy(&b, current_task(v, true), known, &missing)) {
        return;
    }
    if ((r->flags & FLAG_TASK_UNKNOWN) && identity_points()) {
        v->deferred_builder = b;
        v->deferred_missing = missing;
        v->deferred = true; /* named and put in the ring at the kernel's entry */
        return;
    }
    put_entry(&b, missing);
}

static bool identity_points(void)
{
    for (int i = 0; i < IDENTITY_POINTS; i++) {
        if (cfg.identity_address[i]) {
            return true;
        }
    }
    return false;
}

/* Is pid followed (insert: make it so)? Caller holds the lock. pid 0 is never a user task. */
static bool followed_pid(int32_t pid, bool insert)
{
    if (pid <= 0) {
        return false;
    }
    unsigned start = (unsigned)pid * 0x9E3779B1u % FOLLOWED_SLOTS;
    for (unsigned i = 0; i < FOLLOWED_SLOTS; i++) {
        int32_t *slot = &followed[(start + i) % FOLLOWED_SLOTS];
        if (*slot == pid) {
            return true;
        }
        if (*slot == 0) {
            if (insert) {
                *slot = pid;
            }
            return insert;
        }
    }
    return false; /* full: -f follows no more (the tracer's own filter still applies) */
}

/* CallFilter.wants_task (tracer/engine.py), in the same order. Caller holds the lock. */
static bool task_wanted(const struct record *r)
{
    const struct task_filter *f = &cfg.tasks;
    if (!f->enabled || (r->flags & FLAG_TASK_UNKNOWN)) {
        return true; /* (an unnamed caller: the tracer decides) */
    }
    if (followed_pid(r->pid, false)) {
        return true;
    }
    if (f->follow && followed_pid(r->ppid, false)) {
        followed_pid(r->pid, true);
        return true;
    }
    bool listed = f->n_pids == 0;
    for (uint32_t i = 0; i < f->n_pids && i < MAX_FILTER_PIDS; i++) {
        listed |= f->pids[i] == r->pid;
    }
    if (!listed || (f->use_comm && strncmp(r->comm, f->comm, sizeof(f->comm)) != 0)) {
        return false;
    }
    if (f->follow) {
        followed_pid(r->pid, true);
    }
    return true;
}

static bool task_wanted_now(const struct record *r)
{
    if (!cfg.tasks.enabled) {
        return true;
    }
    pthread_mutex_lock(&lock);
    bool wanted = task_wanted(r);
    pthread_mutex_unlock(&lock);
    return wanted;
}

/* The entry record in the builder goes to the ring; a named caller gets a pending slot,
 * which its exit (and exec's refresh) will find. */
static void put_entry(struct builder *b, uint32_t missing)
{
    struct record *r = b->r;
    uint64_t nr = r->nr;
    int abi = r->abi;
    pthread_mutex_lock(&lock);
    if (!task_wanted(r)) {
        pthread_mutex_unlock(&lock);
        return; /* (its memory was copied already: only a KPTI entry gets this far) */
    }
    bool returns = !(nr < MAX_NR && (cfg.calls[abi][nr].selected & CALL_NO_RETURN));
    if (ring_put(r) && r->task) {
        struct pending *p = pending_slot(r->task, returns);
        if (p && !returns) {
            p->live = 0; /* exit, exit_group: nothing of this task is in flight any more */
        } else if (p) {
            p->task = r->task;
            p->live = 1;
            p->abi = (uint8_t)abi;
            p->retry_rules = missing;
            p->nr = nr;
            p->pid = r->pid;
            p->tid = r->tid;
            p->ppid = r->ppid;
            p->flags = r->flags;
            memcpy(p->comm, r->comm, sizeof(p->comm));
            memcpy(p->args, r->args, sizeof(p->args));
        }
    }
    pthread_mutex_unlock(&lock);
}

/* In the kernel: the task on this vCPU and a copy of its call in flight, if it has one.
 * `finish` ends the call (its exit); otherwise only its missing memory is taken over. */
static bool pending_of_current(struct vcpu_state *v, bool finish, uint64_t *task,
                               struct pending *call)
{
    *task = current_task(v, false);
    if (!*task) {
        return false;
    }
    pthread_mutex_lock(&lock);
    struct pending *p = pending_slot(*task, false);
    bool found = p && p->live && (finish || (p->retry_rules && p->nr < MAX_NR));
    if (found) {
        *call = *p;
        if (finish) {
            p->live = 0;
        } else {
            p->retry_rules = 0;
        }
    }
    pthread_mutex_unlock(&lock);
    return found;
}

/* A later record of a call names the caller as its entry did. */
static void identity_from_entry(struct record *r, uint64_t task, const struct pending *call)
{
    r->task = task;
    r->pid = call->pid;
    r->tid = call->tid;
    r->ppid = call->ppid;
    r->flags = call->flags;
    memcpy(r->comm, call->comm, sizeof(r->comm));
}

static void on_exit_point(unsigned int vcpu, void *udata)
{
    (void)udata;
    if (!cfg.enabled) {
        return;
    }
    struct vcpu_state *v = vcpu_state(vcpu);
    flush_deferred(v);
    uint64_t task;
    struct pending call;
    bool found = pending_of_current(v, true, &task, &call);
    if (cfg.handler.enabled) {
        qemu_plugin_u64_set(arm_exit, vcpu, 0); /* this task's call ends here */
    }
    if (!found) {
        return; /* not a call we captured: unselected, a fork child's first return, ... */
    }
    uint64_t regs = read_reg(v, cfg.kernel.first_argument) & word_mask(), orig_ax = 0, ax = 0;
    struct field result[] = {{cfg.regs_orig_ax, cfg.kernel.word_size, &orig_ax},
                             {cfg.regs_ax, cfg.kernel.word_size, &ax}};
    if (!read_fields(v, regs, result, 2)) {
        return;
    }
    struct builder b;
    struct record *r = start_record(v, &b, TYPE_EXIT, vcpu, call.abi);
    bool known = call.nr < MAX_NR;
    if (known && cfg.calls[call.abi][call.nr].selected & CALL_REREAD_AT_EXIT) {
        read_identity(v, task, r); /* exec: the new program's name */
    } else {
        identity_from_entry(r, task, &call);
    }
    r->nr = (uint64_t)signed_word(orig_ax);
    r->ret = signed_word(ax);
    if (known && (cfg.calls[call.abi][call.nr].selected & CALL_FORKS) && r->ret > 0
        && cfg.tasks.enabled && cfg.tasks.follow) {
        pthread_mutex_lock(&lock);
        followed_pid((int32_t)r->ret, true); /* CallFilter.forked: the child is followed */
        pthread_mutex_unlock(&lock);
    }
    memcpy(r->args, call.args, sizeof(r->args));
    r->pc = __atomic_load_n(&exit_address, __ATOMIC_RELAXED);
    r->cr3 = read_reg(v, R_CR3);
    if (known) {
        /* The rules are those of the entry's call (exec may rewrite orig_ax). */
        apply_rules(&b, call.nr, WHEN_EXIT, call.args, r->ret, 0, 0);
        if (call.retry_rules) {
            apply_rules(&b, call.nr, WHEN_ENTRY, call.args, 0, 0, call.retry_rules);
        }
    }
    publish(&b);
}

/*
 * execve's strings may sit in pages the caller has not touched since fork (a static
 * binary's string literals: fork copies no page-table entries for file mappings), so they
 * are unreadable at the syscall instruction, and by the return the old address space is
 * gone. bprm_execve() runs after the kernel has copied the filename and argv (faulting
 * those pages in) and before the point of no return: copy what was missing there.
 */
static void on_refresh_point(unsigned int vcpu, void *udata)
{
    (void)udata;
    if (!cfg.enabled) {
        return;
    }
    struct vcpu_state *v = vcpu_state(vcpu);
    flush_deferred(v);
    uint64_t task;
    struct pending call;
    if (!pending_of_current(v, false, &task, &call)) {
        return;
    }
    struct builder b;
    struct record *r = start_record(v, &b, TYPE_REFRESH, vcpu, call.abi);
    identity_from_entry(r, task, &call);
    r->nr = call.nr;
    memcpy(r->args, call.args, sizeof(r->args));
    apply_rules(&b, call.nr, WHEN_ENTRY, call.args, 0, 0, call.retry_rules);
    publish(&b);
}

/*
 * With KPTI the caller cannot be read at the syscall instruction: the user page tables do
 * not map the per-CPU area. The first C function of each entry path (do_syscall_64,
 * do_fast_syscall_32, the int 0x80 handler) runs on the kernel's page tables with
 * interrupts still off, so the task there is the caller: name the waiting entry and
 * put it in the ring (the exit then pairs with it as without KPTI).
 */
static void on_identity_point(unsigned int vcpu, void *udata)
{
    (void)udata;
    struct vcpu_state *v = vcpu_state(vcpu);
    if (!v->deferred) {
        return;
    }
    v->deferred = false;
    struct builder *b = &v->deferred_builder;
    if (cfg.enabled) {
        uint32_t size = b->r->size;
        read_identity(v, current_task(v, false), b->r);
        b->r->size = size;
        put_entry(b, v->deferred_missing);
    }
}

/* The entry stub (mechanism, ABI) that a return address just below pt_regs points into. */
static bool stub_of_return(uint64_t return_address, int *mechanism, int *abi)
{
    bool found = false;
    for (uint32_t i = 0; i < cfg.handler.n_stubs; i++) {
        const struct stub *s = &cfg.handler.stubs[i];
        if (s->start <= return_address && return_address - s->start < cfg.handler.stub_span) {
            *mechanism = (int)s->mechanism; /* stubs are sorted: the last start before it */
            *abi = (int)s->abi;
            found = true;
        }
    }
    return found;
}

/* A pt_regs field of the kernel's width, in a copy of pt_regs (offsets checked by
 * handler_config_valid). */
static uint64_t regs_word(const uint8_t *frame, uint32_t offset)
{
    uint64_t word = 0;
    memcpy(&word, frame + offset, cfg.kernel.word_size);
    return word;
}

/*
 * A selected call's handler, __x64_sys_NAME(const struct pt_regs *regs) or __ia32_sys_NAME:
 * the call as the kernel saved it (number in orig_ax, arguments as the ABI passes them,
 * the 32-bit fast paths' sixth argument already fetched from the user stack), the caller
 * on kernel page tables (KPTI or not). The record is the one the instruction would have
 * made; its exit is armed on this vCPU until the call returns. Where pt_regs is (the C
 * function's first argument) and which of its fields is which argument come with the
 * configuration: x86-64 and i386 kernels differ in both.
 */
static void on_handler(unsigned int vcpu, void *udata)
{
    (void)udata;
    check_config(true);
    if (!handler_mode() || !tracer_alive()) {
        return;
    }
    struct vcpu_state *v = vcpu_state(vcpu);
    const struct handler_config *h = &cfg.handler;
    uint64_t regs = read_reg(v, cfg.kernel.first_argument) & word_mask(), return_address = 0;
    uint8_t frame[512];
    bool unused = false;
    int mechanism = MECH_NONE, abi = ABI_X86_64;
    if (read_guest(v, regs, frame, h->regs_size, false, &unused) != h->regs_size
        || !read_word(v, regs - cfg.kernel.word_size, &return_address)
        || !stub_of_return(return_address, &mechanism, &abi)) {
        return; /* not called from a system-call entry (or pt_regs unreadable) */
    }
    uint64_t nr = regs_word(frame, cfg.regs_orig_ax);
    if (abi == ABI_I386) {
        nr &= 0xffffffffu;
    }
    bool known = nr < MAX_NR;
    if (known ? !(cfg.calls[abi][nr].selected & CALL_SELECTED) : !cfg.unknown_selected) {
        return; /* a handler shared with unselected numbers (sys_ni_syscall, aliases) */
    }
    struct builder b;
    struct record *r = start_record(v, &b, TYPE_ENTRY, vcpu, abi);
    r->mechanism = (uint8_t)mechanism;
    r->nr = nr;
    r->pc = regs_word(frame, h->regs_ip) & b.mask; /* where the call returns to */
    r->sp = regs_word(frame, h->regs_sp) & b.mask;
    r->cr3 = read_reg(v, R_CR3);
    for (int i = 0; i < 6; i++) {
        r->args[i] = regs_word(frame, h->regs_arguments[abi][i]) & b.mask;
    }
    uint32_t missing = 0;
    if (!name_and_copy(&b, current_task(v, false), known, &missing)) {
        return;
    }
    put_entry(&b, missing);
    qemu_plugin_u64_set(arm_exit, vcpu, 1);
}

/* __switch_to(prev, next): from here on this vCPU runs `next` (current_task answers from
 * it); in selective tracing its exit (and exec refresh) points matter only if `next` has
 * a selected call in flight. */
static void on_switch(unsigned int vcpu, void *udata)
{
    (void)udata;
    struct vcpu_state *v = vcpu_state(vcpu);
    uint64_t next = read_reg(v, cfg.switch_next) & word_mask();
    __atomic_store_n(&v->running, kernel_address(next) ? next : 0, __ATOMIC_RELAXED);
    if (!handler_mode()) {
        return; /* full tracing: every exit is armed already */
    }
    pthread_mutex_lock(&lock);
    struct pending *p = pending_slot(next, false);
    bool in_flight = p && p->live;
    pthread_mutex_unlock(&lock);
    qemu_plugin_u64_set(arm_exit, vcpu, in_flight);
}

static bool is_handler(uint64_t vaddr)
{
    uint32_t n = n_handlers_now < MAX_HANDLERS ? n_handlers_now : MAX_HANDLERS;
    uint32_t low = 0, high = n;
    while (low < high) { /* handlers_now is sorted */
        uint32_t mid = (low + high) / 2;
        if (handlers_now[mid] < vaddr) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    return low < n && handlers_now[low] == vaddr;
}

/* ---- translation ---------------------------------------------------------------------- */

static bool legacy_prefix(uint8_t byte)
{
    switch (byte) {
    case 0x26: case 0x2e: case 0x36: case 0x3e: case 0x64: case 0x65:
    case 0x66: case 0x67: case 0xf0: case 0xf2: case 0xf3:
        return true;
    }
    return false;
}

/* The mechanism of one whole decoded instruction, or MECH_NONE. */
static int classify(const uint8_t *bytes, size_t size)
{
    size_t i = 0;
    while (i < size && legacy_prefix(bytes[i])) {
        i++;
    }
    if (size - i == 3 && (bytes[i] & 0xf0) == 0x40) {
        i++; /* REX: only ever a prefix in an instruction QEMU decoded as one */
    }
    if (size - i != 2) {
        return MECH_NONE;
    }
    if (bytes[i] == 0x0f && bytes[i + 1] == 0x05) {
        return MECH_SYSCALL;
    }
    if (bytes[i] == 0x0f && bytes[i + 1] == 0x34) {
        return MECH_SYSENTER;
    }
    if (bytes[i] == 0xcd && bytes[i + 1] == 0x80) {
        return MECH_INT80;
    }
    return MECH_NONE;
}

static void armed_cb(struct qemu_plugin_insn *insn, qemu_plugin_vcpu_udata_cb_t cb,
                     qemu_plugin_u64 armed)
{
    qemu_plugin_register_vcpu_insn_exec_cond_cb(insn, cb, QEMU_PLUGIN_CB_R_REGS,
                                                QEMU_PLUGIN_COND_NE, armed, 0, NULL);
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    uint64_t exit_at = __atomic_load_n(&exit_address, __ATOMIC_ACQUIRE);
    uint64_t refresh_at = __atomic_load_n(&refresh_address, __ATOMIC_ACQUIRE);
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        size_t size = qemu_plugin_insn_size(insn);
        uint64_t vaddr = qemu_plugin_insn_vaddr(insn);
        if (exit_at && vaddr == exit_at) {
            armed_cb(insn, on_exit_point, arm_exit);
            continue;
        }
        if (refresh_at && vaddr == refresh_at) {
            armed_cb(insn, on_refresh_point, arm_exit);
            continue;
        }
        if (switch_now && vaddr == switch_now) {
            armed_cb(insn, on_switch, arm_handler);
            continue;
        }
        if (n_handlers_now && is_handler(vaddr)) {
            armed_cb(insn, on_handler, arm_handler);
            continue;
        }
        bool identity = false;
        for (int k = 0; k < IDENTITY_POINTS; k++) {
            uint64_t at = __atomic_load_n(&identity_address[k], __ATOMIC_ACQUIRE);
            identity |= at && vaddr == at;
        }
        if (identity) {
            armed_cb(insn, on_identity_point, arm_insn);
            continue;
        }
        if (size < 2 || size > 15) {
            continue;
        }
        uint8_t bytes[15];
        int mechanism = classify(bytes, qemu_plugin_insn_data(insn, bytes, size));
        if (mechanism != MECH_NONE) {
            qemu_plugin_register_vcpu_insn_exec_cond_cb(
                insn, on_syscall_insn, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_COND_NE, arm_insn, 0,
                (void *)(uintptr_t)(vaddr << 2 | mechanism));
        }
    }
}

static void on_idle(qemu_plugin_id_t id, unsigned int vcpu)
{
    (void)id;
    (void)vcpu;
    check_config(true); /* an idle guest makes no calls: take a new configuration here too */
}

static void on_vcpu_init(qemu_plugin_id_t id, unsigned int vcpu)
{
    (void)id;
    (void)vcpu;
    if (reg_handles[R_CR3]) {
        return; /* register handles are the same for every vCPU */
    }
    GArray *registers = qemu_plugin_get_registers();
    qemu_plugin_reg_descriptor *d = (qemu_plugin_reg_descriptor *)registers->data;
    for (unsigned i = 0; i < registers->len; i++) {
        for (int k = 0; k < R_COUNT; k++) {
            if (register_names[k] && strcmp(d[i].name, register_names[k]) == 0) {
                reg_handles[k] = d[i].handle;
            }
        }
    }
    for (int k = 0; k < R_COUNT; k++) {
        if (register_names[k] && !reg_handles[k]) {
            char line[128];
            snprintf(line, sizeof(line), "xenhpt_capture: QEMU offers no register %s\n",
                     register_names[k]);
            qemu_plugin_outs(line);
        }
    }
}

static void on_exit_qemu(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    if (hdr) {
        __atomic_store_n(&hdr->qemu_exited, 1, __ATOMIC_RELEASE);
    }
}

/*
 * With nothing armed, no callback runs: a configuration (or a tracer gone silent) must be
 * noticed without one. Every few milliseconds: take a new configuration that needs no
 * flush, or wake the vCPUs for one that does; stop capture whose tracer went silent.
 */
static void *watch(void *unused)
{
    (void)unused;
    for (;;) {
        struct timespec pause = {0, 5 * 1000 * 1000};
        nanosleep(&pause, NULL);
        check_config(false);
        if (cfg.enabled) {
            tracer_alive();
        }
    }
    return NULL;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    uint64_t ring_bytes = 32u << 20;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "shm=", 4) == 0) {
            shm_path = argv[i] + 4;
        } else if (strncmp(argv[i], "ring=", 5) == 0) {
            ring_bytes = strtoull(argv[i] + 5, NULL, 0);
        } else {
            fprintf(stderr, "xenhpt_capture: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    if (info->system_emulation && strcmp(info->target_name, "i386") == 0) {
        register_names = names_i386; /* a 32-bit guest: what its kernel is, the tracer says */
    } else if (!info->system_emulation || strcmp(info->target_name, "x86_64") != 0) {
        fprintf(stderr, "xenhpt_capture: needs qemu-system-x86_64 or qemu-system-i386\n");
        return -1;
    }
    if (!shm_path || ring_bytes < (1u << 20) || (ring_bytes & (ring_bytes - 1))) {
        fprintf(stderr, "xenhpt_capture: needs shm=PATH and ring=<power of two >= 1 MiB>\n");
        return -1;
    }
    size_t total = HEADER_SIZE + CONFIG_SIZE + ring_bytes;
    int fd = open(shm_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)total) != 0) {
        fprintf(stderr, "xenhpt_capture: cannot create %s: %s\n", shm_path, strerror(errno));
        return -1;
    }
    /* Reserve every page now. A sparse ring on a tmpfs that fills up later would kill
     * QEMU, and the guest with it, with SIGBUS at the first record written to a page it
     * cannot get; and the first pass over a sparse ring pays a page fault per 4 KiB. */
    int reserved = posix_fallocate(fd, 0, (off_t)total);
    if (reserved != 0) {
        fprintf(stderr, "xenhpt_capture: cannot reserve the %llu MiB of %s: %s\n",
                (unsigned long long)(total >> 20), shm_path, strerror(reserved));
        close(fd);
        unlink(shm_path);
        return -1;
    }
    uint8_t *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
        fprintf(stderr, "xenhpt_capture: cannot map %s: %s\n", shm_path, strerror(errno));
        return -1;
    }
    hdr = (struct header *)base;
    shared_config = (struct config *)(base + HEADER_SIZE);
    ring = base + HEADER_SIZE + CONFIG_SIZE;
    ring_size = ring_bytes;
    max_vcpus = info->system.max_vcpus > 0 ? (unsigned)info->system.max_vcpus : 1;
    vcpus = calloc(max_vcpus, sizeof(*vcpus));
    hdr->version = LAYOUT_VERSION;
    hdr->header_size = HEADER_SIZE;
    hdr->config_offset = HEADER_SIZE;
    hdr->config_size = CONFIG_SIZE;
    hdr->ring_offset = HEADER_SIZE + CONFIG_SIZE;
    hdr->ring_size = ring_bytes;
    hdr->max_vcpus = max_vcpus;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(hdr->magic, MAGIC, 8); /* last: a reader that sees the magic sees the rest */
    plugin_id = id;
    arming = qemu_plugin_scoreboard_new(sizeof(struct arming));
    arm_insn = (qemu_plugin_u64){arming, offsetof(struct arming, insn)};
    arm_exit = (qemu_plugin_u64){arming, offsetof(struct arming, exit)};
    arm_handler = (qemu_plugin_u64){arming, offsetof(struct arming, handler)};
    pthread_t watcher;
    if (pthread_create(&watcher, NULL, watch, NULL) != 0) {
        fprintf(stderr, "xenhpt_capture: cannot start its watcher thread\n");
        return -1;
    }
    pthread_detach(watcher);
    qemu_plugin_register_vcpu_init_cb(id, on_vcpu_init);
    qemu_plugin_register_atexit_cb(id, on_exit_qemu, NULL);
    install_callbacks(id);
    return 0;
}
