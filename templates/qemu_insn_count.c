// qemu_insn_count.c - a qemu TCG plugin that counts the AArch64 instructions a guest executes, by class.
//
// edgebuild builds it on first use against include/qemu/qemu-plugin.h of the Debian qemu source
// package that matches the installed qemu-user (compiler/toolchains/qemu_plugin.py) and loads it
// into the dynamic qemu-aarch64 with `-plugin libinsn_count.so,out=FILE`.
//
// Counting: when qemu translates a block, each instruction word is decoded into classes (below) and
// the block gets one inline add per class it contains, so a block costs a few adds each time it
// runs, whatever its length. Counts are exact for blocks that run to their end (a fault in the middle
// of a block is rare and over-counts its tail).
//
// Marks: the guest calls lseek(-1, MARK_MAGIC, n) (EBADF, no effect on the guest) to snapshot the
// counters under label n; the build's worker marks after a warm-up call and after N more calls, so
// (mark 2 - mark 1) / N is the cost of one inference with start-up and model loading cancelled out.
// At exit the plugin writes one JSON object to FILE: {"classes": [...], "marks": [{"label": n,
// "counts": [...]}, ...], "exit": [...]}.

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

enum { TOTAL, DOT, WIDEN_MUL, PAIRWISE_ACC, VEC_FMA, SCALAR_FP, CLASSES };
static const char *class_names[CLASSES] = {"total", "sdot_udot", "smull_smlal", "sadalp", "fmla", "scalar_fp"};

#define MARK_MAGIC 0x6564676562756964ULL  // "edgebuid"
#define MAX_MARKS 64
#define LSEEK_AARCH64 62

static uint64_t counts[CLASSES];
static uint64_t marks[MAX_MARKS][CLASSES];
static int64_t mark_labels[MAX_MARKS];
static int mark_count;
static char out_path[4096];

// Which class an A64 instruction word is in (TOTAL: none of the others). Encodings from the Arm
// Architecture Reference Manual (A64 "Advanced SIMD" and "Floating-point" encoding tables).
static int classify(uint32_t w) {
  // SDOT/UDOT (vector): 0 Q U 01110 10 0 Rm 100101 Rn Rd
  if ((w & 0x9FE0FC00u) == 0x0E809400u) return DOT;
  // SDOT/UDOT (by element): 0 Q U 01111 10 L M Rm 1110 H 0 Rn Rd
  if ((w & 0x9FC0F400u) == 0x0F80E000u) return DOT;
  // SMULL/UMULL, SMLAL/UMLAL, SMLSL/UMLSL (vector, three different): 0 Q U 01110 size 1 Rm opc 00 Rn Rd
  if ((w & 0x9F20FC00u) == 0x0E20C000u || (w & 0x9F20FC00u) == 0x0E208000u || (w & 0x9F20FC00u) == 0x0E20A000u)
    return WIDEN_MUL;
  // SMULL/UMULL (by element, opc 1010), SMLAL/UMLAL (0010), SMLSL/UMLSL (0110): 0 Q U 01111 size L M Rm opc H 0
  if ((w & 0x9F00F400u) == 0x0F00A000u || (w & 0x9F00F400u) == 0x0F002000u || (w & 0x9F00F400u) == 0x0F006000u)
    return WIDEN_MUL;
  // SADALP/UADALP: 0 Q U 01110 size 10000 00110 10 Rn Rd
  if ((w & 0x9F3FFC00u) == 0x0E206800u) return PAIRWISE_ACC;
  // FMLA (vector, single/double): 0 Q 0 01110 0 sz 1 Rm 11001 1 Rn Rd
  if ((w & 0xBFA0FC00u) == 0x0E20CC00u) return VEC_FMA;
  // FMLA (by element, single/double): 0 Q 0 01111 1 sz L M Rm 0001 H 0 Rn Rd
  if ((w & 0xBF80F400u) == 0x0F801000u) return VEC_FMA;
  // Scalar floating point: data processing (M 0 S 11110 ftype 1 ...) and 3-source (M 0 S 11111 ...).
  if ((w & 0x5F200000u) == 0x1E200000u || (w & 0x5F000000u) == 0x1F000000u) return SCALAR_FP;
  return TOTAL;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  size_t n = qemu_plugin_tb_n_insns(tb);
  uint64_t per_class[CLASSES] = {0};
  for (size_t i = 0; i < n; i++) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    per_class[TOTAL]++;
    if (qemu_plugin_insn_size(insn) == 4) {
      uint32_t word;
      memcpy(&word, qemu_plugin_insn_data(insn), sizeof word);
      int c = classify(word);
      if (c != TOTAL) per_class[c]++;
    }
  }
  for (int c = 0; c < CLASSES; c++) {
    if (per_class[c]) qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &counts[c], per_class[c]);
  }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                       uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8) {
  if (num != LSEEK_AARCH64 || a1 != UINT64_MAX || a2 != MARK_MAGIC || mark_count >= MAX_MARKS) return;
  memcpy(marks[mark_count], counts, sizeof counts);
  mark_labels[mark_count++] = (int64_t)a3;
}

static void write_counts(FILE *out, const uint64_t *values) {
  fputc('[', out);
  for (int c = 0; c < CLASSES; c++) fprintf(out, "%s%" PRIu64, c ? ", " : "", values[c]);
  fputc(']', out);
}

static void at_exit(qemu_plugin_id_t id, void *data) {
  FILE *out = fopen(out_path, "w");
  if (!out) return;
  fputs("{\"classes\": [", out);
  for (int c = 0; c < CLASSES; c++) fprintf(out, "%s\"%s\"", c ? ", " : "", class_names[c]);
  fputs("], \"marks\": [", out);
  for (int m = 0; m < mark_count; m++) {
    fprintf(out, "%s{\"label\": %" PRId64 ", \"counts\": ", m ? ", " : "", mark_labels[m]);
    write_counts(out, marks[m]);
    fputc('}', out);
  }
  fputs("], \"exit\": ", out);
  write_counts(out, counts);
  fputs("}\n", out);
  fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  for (int i = 0; i < argc; i++) {
    if (strncmp(argv[i], "out=", 4) == 0) snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
  }
  if (!out_path[0]) {
    fprintf(stderr, "insn_count: give the output file as out=PATH\n");
    return -1;
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
  qemu_plugin_register_atexit_cb(id, at_exit, NULL);
  return 0;
}
