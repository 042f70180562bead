/*
 * insn_split.c: a qemu-user TCG plugin (qemu >= 7.2 plugin API v1) that counts the guest
 * instructions executed, in total and per guest function, for bench/insn_counts.sh.
 *
 * Total: one inline add per executed instruction (the same method as qemu's own
 * tests/plugin/insn.c with inline=on), so it is exact.
 * Per function: one inline add of the block's length per executed translation block, charged
 * to the symbol that holds the block's first instruction (qemu_plugin_insn_symbol: the main
 * binary's symbol table, which qemu-user 7.2 loads only when logging is on, so run qemu with
 * `-d plugin`; code in libc / libm / ld.so has no symbol here and is charged to "?"). Exact as long as blocks run to their end, which only a fault in the
 * middle of a block breaks; the script prints both sums so any difference shows.
 *
 * Marks: with mark=NR, every guest syscall number NR whose first argument is 1 (CLOCK_MONOTONIC)
 * records the exact count so far: NR = clock_gettime (113 on aarch64; 403, clock_gettime64, on
 * armv7 glibc >= 2.31). qemu-user 7.2 gives the guest no vDSO, so each Rust `Instant::now()` is
 * such a syscall, and `sonoedge bench` makes three per run (before preprocessing, after it, after
 * the inference): the differences between the last marks are the counts of each run, preprocessing
 * and inference apart, from one process.
 *
 * At each mark the per-function counters are copied too, so the per-function split of each run
 * comes out as well.
 *
 * Options: out=FILE (default: stderr via qemu_plugin_outs), mark=NR. Output: "total\tN",
 * "tbsum\tN", "mark\tN" per mark in order, per interval between marks "interval\tI" and
 * "d\tN\tmangled-symbol" lines, then "functions" and "N\tmangled-symbol" per function over the
 * whole process, unsorted. Counters are not atomic: run the guest with one
 * thread doing the work (sonoedge --threads 1).
 *
 * Build: gcc -O2 -shared -fPIC -I QEMU_SRC/include/qemu $(pkg-config --cflags glib-2.0) \
 *        -o libinsn_split.so insn_split.c
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
    char *name;
    uint64_t count;
    guint id;
} Sym;

static uint64_t total;
static GHashTable *syms; /* name -> Sym*, entries never freed: TBs keep pointers */
static GMutex lock;
static char *out_path;
static Sym *unknown;
static int64_t mark_nr = -1;
static GArray *marks;
static GPtrArray *all_syms;  /* id -> Sym* */
static GPtrArray *snapshots; /* per mark: uint64_t[n_syms at that time] */
static GArray *snap_len;     /* per mark: n_syms at that time */

static void vcpu_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                         uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                         uint64_t a7, uint64_t a8)
{
    if (num == mark_nr && a1 == 1) {
        g_mutex_lock(&lock);
        g_array_append_val(marks, total);
        guint n = all_syms->len;
        uint64_t *snap = g_new(uint64_t, n);
        for (guint i = 0; i < n; i++) {
            snap[i] = ((Sym *)g_ptr_array_index(all_syms, i))->count;
        }
        g_ptr_array_add(snapshots, snap);
        g_array_append_val(snap_len, n);
        g_mutex_unlock(&lock);
    }
}

static Sym *sym_for(const char *name)
{
    Sym *s;
    g_mutex_lock(&lock);
    s = g_hash_table_lookup(syms, name);
    if (!s) {
        s = g_new0(Sym, 1);
        s->name = g_strdup(name);
        s->id = all_syms->len;
        g_ptr_array_add(all_syms, s);
        g_hash_table_insert(syms, s->name, s);
    }
    g_mutex_unlock(&lock);
    return s;
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (n == 0) {
        return;
    }
    const char *name = qemu_plugin_insn_symbol(qemu_plugin_tb_get_insn(tb, 0));
    Sym *s = name ? sym_for(name) : unknown;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &s->count, n);
    for (size_t i = 0; i < n; i++) {
        qemu_plugin_register_vcpu_insn_exec_inline(qemu_plugin_tb_get_insn(tb, i),
                                                   QEMU_PLUGIN_INLINE_ADD_U64, &total, 1);
    }
}

static void plugin_exit(qemu_plugin_id_t id, void *p)
{
    GString *out = g_string_new(NULL);
    uint64_t tbsum = 0;
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, syms);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        tbsum += ((Sym *)v)->count;
    }
    g_string_append_printf(out, "total\t%" PRIu64 "\ntbsum\t%" PRIu64 "\n", total, tbsum);
    for (guint i = 0; i < marks->len; i++) {
        g_string_append_printf(out, "mark\t%" PRIu64 "\n", g_array_index(marks, uint64_t, i));
    }
    /* Per-function deltas between consecutive marks: "interval\tI" (mark I-1 to mark I), then
     * "d\tN\tsymbol" for each function that ran in it. */
    for (guint m = 1; m < marks->len; m++) {
        uint64_t *a = g_ptr_array_index(snapshots, m - 1), *b = g_ptr_array_index(snapshots, m);
        guint na = g_array_index(snap_len, guint, m - 1), nb = g_array_index(snap_len, guint, m);
        g_string_append_printf(out, "interval\t%u\n", m);
        for (guint i = 0; i < nb; i++) {
            uint64_t d = b[i] - (i < na ? a[i] : 0);
            if (d) {
                g_string_append_printf(out, "d\t%" PRIu64 "\t%s\n", d,
                                       ((Sym *)g_ptr_array_index(all_syms, i))->name);
            }
        }
    }
    g_string_append(out, "functions\n");
    g_hash_table_iter_init(&it, syms);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        Sym *s = v;
        if (s->count) {
            g_string_append_printf(out, "%" PRIu64 "\t%s\n", s->count, s->name);
        }
    }
    if (out_path) {
        FILE *f = fopen(out_path, "w");
        if (f) {
            fputs(out->str, f);
            fclose(f);
        } else {
            qemu_plugin_outs("insn_split: cannot write out= file\n");
        }
    } else {
        qemu_plugin_outs(out->str);
    }
    g_string_free(out, TRUE);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (g_str_has_prefix(argv[i], "out=")) {
            out_path = g_strdup(argv[i] + 4);
        } else if (g_str_has_prefix(argv[i], "mark=")) {
            mark_nr = g_ascii_strtoll(argv[i] + 5, NULL, 10);
        } else {
            fprintf(stderr, "insn_split: unknown option %s\n", argv[i]);
            return -1;
        }
    }
    syms = g_hash_table_new(g_str_hash, g_str_equal);
    all_syms = g_ptr_array_new();
    snapshots = g_ptr_array_new();
    snap_len = g_array_new(FALSE, FALSE, sizeof(guint));
    unknown = sym_for("?");
    marks = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    if (mark_nr >= 0) {
        qemu_plugin_register_vcpu_syscall_cb(id, vcpu_syscall);
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
