/*
 * insn_split.c: a qemu-user TCG plugin (qemu >= 7.2 plugin API v1) that counts the guest
 * instructions executed, in total and per guest function, for bench/insn_counts.sh.
 *
 * Total: one inline add per executed instruction (the same method as qemu's own
 * tests/plugin/insn.c with inline=on), so it is exact.
 * Per function: one inline add of the block's length per executed translation block, charged
 * to the symbol that holds the block's first instruction (qemu_plugin_insn_symbol: the main
 * binary's symbol table, which qemu-user loads; code in libc / libm / ld.so has no symbol here
 * and is charged to "?"). Exact as long as blocks run to their end, which only a fault in the
 * middle of a block breaks; the script prints both sums so any difference shows.
 *
 * Options: out=FILE (default: stderr via qemu_plugin_outs). Output: "total\tN", "tbsum\tN", then
 * "N\tmangled-symbol" per function, unsorted. Counters are not atomic: run the guest with one
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
} Sym;

static uint64_t total;
static GHashTable *syms; /* name -> Sym*, entries never freed: TBs keep pointers */
static GMutex lock;
static char *out_path;
static Sym *unknown;

static Sym *sym_for(const char *name)
{
    Sym *s;
    g_mutex_lock(&lock);
    s = g_hash_table_lookup(syms, name);
    if (!s) {
        s = g_new0(Sym, 1);
        s->name = g_strdup(name);
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
        } else {
            fprintf(stderr, "insn_split: unknown option %s\n", argv[i]);
            return -1;
        }
    }
    syms = g_hash_table_new(g_str_hash, g_str_equal);
    unknown = sym_for("?");
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
