/*
 * A stand-in for QEMU around the capture plugin (xenhpt_capture.c, included whole): the
 * few plugin API functions it calls, over a table of registers and a sparse guest memory
 * that tests/test_plugin_host.py sets line by line on stdin, so that the plugin's
 * callbacks run on a made-up vCPU without a VM. One command a line, one answer a line:
 *
 *   install TARGET PATH      load the plugin (TARGET: i386 or x86_64), shared file PATH
 *   reg NAME HEX             a register's value (QEMU's name for it: eax, rsi, fs_base...)
 *   mem HEX HEXBYTES         guest memory at a virtual address
 *   idle                     the vCPU goes idle (the plugin takes a new configuration)
 *   run HEX                  translate one instruction at HEX and execute it: "ran" if
 *                            the plugin's callback there ran, "skipped" if it was not armed,
 *                            "none" if the plugin instruments nothing there
 *   armed                    the vCPU's scoreboard: insn exit handler
 *
 * SPDX-License-Identifier: LGPL-3.0-or-later
 */
#include "xenhpt_capture.c"

#include <inttypes.h>

/* ---- GLib, as far as the plugin uses it ------------------------------------------------ */

GByteArray *g_byte_array_new(void)
{
    return calloc(1, sizeof(GByteArray));
}

GByteArray *g_byte_array_set_size(GByteArray *array, unsigned int length)
{
    array->data = realloc(array->data, length ? length : 1);
    array->len = length;
    return array;
}

/* ---- the vCPU: registers and memory ----------------------------------------------------- */

struct qemu_plugin_register { int index; };
#define HOST_REGISTERS 32
static struct qemu_plugin_register host_handles[HOST_REGISTERS];
static qemu_plugin_reg_descriptor host_descriptors[HOST_REGISTERS];
static uint64_t host_values[HOST_REGISTERS];
static unsigned host_n_registers;
static unsigned host_width = 8; /* bytes a register read gives: 4 on qemu-system-i386 */

static void host_registers(const char *const *names)
{
    host_n_registers = 0;
    for (int k = 0; k < R_COUNT; k++) {
        if (names[k]) {
            unsigned i = host_n_registers++;
            host_handles[i].index = (int)i;
            host_descriptors[i] = (qemu_plugin_reg_descriptor){&host_handles[i], names[k], "x"};
        }
    }
}

GArray *qemu_plugin_get_registers(void)
{
    static GArray array;
    array.data = (char *)host_descriptors;
    array.len = host_n_registers;
    return &array;
}

int qemu_plugin_read_register(struct qemu_plugin_register *handle, GByteArray *buf)
{
    /* As QEMU's gdbstub does: the value is appended to what buf holds. */
    unsigned int before = buf->len;
    g_byte_array_set_size(buf, before + host_width);
    memcpy(buf->data + before, &host_values[handle->index], host_width);
    return (int)host_width;
}

#define HOST_PAGES 64
static struct { uint64_t address; uint8_t bytes[4096]; } host_pages[HOST_PAGES];
static unsigned host_n_pages;

static uint8_t *host_byte(uint64_t address, bool create)
{
    uint64_t page = address & ~(uint64_t)4095;
    for (unsigned i = 0; i < host_n_pages; i++) {
        if (host_pages[i].address == page) {
            return &host_pages[i].bytes[address & 4095];
        }
    }
    if (!create || host_n_pages == HOST_PAGES) {
        return NULL;
    }
    host_pages[host_n_pages].address = page;
    return &host_pages[host_n_pages++].bytes[address & 4095];
}

bool qemu_plugin_read_memory_vaddr(uint64_t addr, GByteArray *data, size_t len)
{
    g_byte_array_set_size(data, (unsigned)len);
    for (size_t i = 0; i < len; i++) {
        uint8_t *byte = host_byte(addr + i, false);
        if (!byte) {
            return false;
        }
        data->data[i] = *byte;
    }
    return true;
}

/* ---- translation, callbacks and the scoreboard ------------------------------------------ */

struct qemu_plugin_scoreboard { uint8_t *data; size_t element_size; };
struct qemu_plugin_insn {
    uint64_t vaddr;
    uint8_t bytes[16];
    size_t size;
    qemu_plugin_vcpu_udata_cb_t cb;
    enum qemu_plugin_cond cond;
    qemu_plugin_u64 entry;
    uint64_t imm;
    void *userdata;
};
struct qemu_plugin_tb { struct qemu_plugin_insn insn; };

static qemu_plugin_vcpu_tb_trans_cb_t host_tb_trans;
static qemu_plugin_vcpu_simple_cb_t host_idle, host_vcpu_init;

struct qemu_plugin_scoreboard *qemu_plugin_scoreboard_new(size_t element_size)
{
    struct qemu_plugin_scoreboard *score = calloc(1, sizeof(*score));
    score->data = calloc(4, element_size);
    score->element_size = element_size;
    return score;
}

static uint64_t *host_score(qemu_plugin_u64 entry, unsigned vcpu)
{
    return (uint64_t *)(entry.score->data + vcpu * entry.score->element_size + entry.offset);
}

void qemu_plugin_u64_set(qemu_plugin_u64 entry, unsigned int vcpu_index, uint64_t val)
{
    __atomic_store_n(host_score(entry, vcpu_index), val, __ATOMIC_RELAXED);
}

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb)
{
    (void)id;
    host_tb_trans = cb;
}

void qemu_plugin_register_vcpu_idle_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_simple_cb_t cb)
{
    (void)id;
    host_idle = cb;
}

void qemu_plugin_register_vcpu_init_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_simple_cb_t cb)
{
    (void)id;
    host_vcpu_init = cb;
}

void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata)
{
    (void)id;
    (void)cb;
    (void)userdata;
}

void qemu_plugin_reset(qemu_plugin_id_t id, qemu_plugin_simple_cb_t cb)
{
    cb(id); /* QEMU does it once the vCPUs left their translated code: here, at once */
}

void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata)
{
    (void)flags;
    insn->cb = cb;
    insn->cond = QEMU_PLUGIN_COND_ALWAYS;
    insn->userdata = userdata;
}

void qemu_plugin_register_vcpu_insn_exec_cond_cb(struct qemu_plugin_insn *insn,
                                                 qemu_plugin_vcpu_udata_cb_t cb,
                                                 enum qemu_plugin_cb_flags flags,
                                                 enum qemu_plugin_cond cond,
                                                 qemu_plugin_u64 entry, uint64_t imm,
                                                 void *userdata)
{
    (void)flags;
    insn->cb = cb;
    insn->cond = cond;
    insn->entry = entry;
    insn->imm = imm;
    insn->userdata = userdata;
}

size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb)
{
    (void)tb;
    return 1;
}

struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx)
{
    (void)idx;
    return (struct qemu_plugin_insn *)&tb->insn;
}

size_t qemu_plugin_insn_data(const struct qemu_plugin_insn *insn, void *dest, size_t len)
{
    size_t n = len < insn->size ? len : insn->size;
    memcpy(dest, insn->bytes, n);
    return n;
}

size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn)
{
    return insn->size;
}

uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn)
{
    return insn->vaddr;
}

void qemu_plugin_outs(const char *string)
{
    fputs(string, stderr);
}

/* Translate one instruction (a one-byte nop unless told) and execute it on vCPU 0. */
static const char *host_run(uint64_t vaddr, const uint8_t *bytes, size_t size)
{
    struct qemu_plugin_tb tb = {.insn = {.vaddr = vaddr, .size = size ? size : 1}};
    memcpy(tb.insn.bytes, size ? bytes : (const uint8_t *)"\x90", size ? size : 1);
    host_tb_trans(plugin_id, &tb);
    if (!tb.insn.cb) {
        return "none";
    }
    if (tb.insn.cond == QEMU_PLUGIN_COND_NE
        && __atomic_load_n(host_score(tb.insn.entry, 0), __ATOMIC_RELAXED) == tb.insn.imm) {
        return "skipped";
    }
    tb.insn.cb(0, tb.insn.userdata);
    return "ran";
}

static size_t host_hex(const char *text, uint8_t *out, size_t max)
{
    size_t n = 0;
    unsigned byte;
    while (n < max && sscanf(text + 2 * n, "%2x", &byte) == 1) {
        out[n++] = (uint8_t)byte;
    }
    return n;
}

int main(void)
{
    char line[65536], word[64], arg[4096];
    static uint8_t bytes[32768];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof(line), stdin)) {
        uint64_t value = 0;
        arg[0] = 0;
        if (sscanf(line, "%63s", word) != 1) {
            continue;
        }
        if (strcmp(word, "install") == 0 && sscanf(line, "%*s %63s %4095s", word, arg) == 2) {
            bool i386 = strcmp(word, "i386") == 0;
            host_width = i386 ? 4 : 8;
            host_registers(i386 ? names_i386 : names_x86_64);
            char shm[4200], *argv[] = {shm};
            snprintf(shm, sizeof(shm), "shm=%s", arg);
            qemu_info_t info = {.target_name = i386 ? "i386" : "x86_64",
                                .system_emulation = true, .system = {1, 1}};
            int failed = qemu_plugin_install(1, &info, 1, argv);
            if (!failed) {
                host_vcpu_init(1, 0);
            }
            printf("%s\n", failed ? "failed" : "ok");
        } else if (strcmp(word, "reg") == 0
                   && sscanf(line, "%*s %63s %" SCNx64, word, &value) == 2) {
            bool found = false;
            for (unsigned i = 0; i < host_n_registers; i++) {
                if (strcmp(host_descriptors[i].name, word) == 0) {
                    host_values[i] = value;
                    found = true;
                }
            }
            printf("%s\n", found ? "ok" : "no such register");
        } else if (strcmp(word, "mem") == 0
                   && sscanf(line, "%*s %" SCNx64, &value) == 1) {
            char *hex = strchr(strchr(line, ' ') + 1, ' ');
            size_t n = hex ? host_hex(hex + 1, bytes, sizeof(bytes)) : 0;
            bool stored = true;
            for (size_t i = 0; i < n && stored; i++) {
                uint8_t *byte = host_byte(value + i, true);
                stored = byte != NULL;
                if (byte) {
                    *byte = bytes[i];
                }
            }
            printf("%s\n", stored ? "ok" : "out of pages");
        } else if (strcmp(word, "idle") == 0) {
            host_idle(plugin_id, 0);
            printf("ok\n");
        } else if (strcmp(word, "run") == 0 && sscanf(line, "%*s %" SCNx64, &value) == 1) {
            char *hex = strchr(strchr(line, ' ') + 1, ' ');
            size_t n = hex ? host_hex(hex + 1, bytes, 15) : 0;
            printf("%s\n", host_run(value, bytes, n));
        } else if (strcmp(word, "armed") == 0) {
            printf("%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", *host_score(arm_insn, 0),
                   *host_score(arm_exit, 0), *host_score(arm_handler, 0));
        } else {
            printf("unknown command\n");
        }
    }
    return 0;
}
