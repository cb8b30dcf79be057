// Picks the kernel table once, at load time: the strongest level CPUID and XGETBV allow, or the level named by
// LAPSE_CPU_LEVEL (generic, avx2, avx512) so benchmarks and tests can run a weaker level on a stronger CPU.

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "CLapseKernels.h"

extern const LapseKernelTable lapse_kernels_generic;
#if defined(__x86_64__)
extern const LapseKernelTable lapse_kernels_avx2;
extern const LapseKernelTable lapse_kernels_avx512;
#include <cpuid.h>

/// XCR0: which register states the OS saves on context switch (an AVX CPU under an OS that doesn't save YMM must
/// not run AVX code).
static unsigned long long read_xcr0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static int detect_level(void) {
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return LAPSE_LEVEL_GENERIC;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return LAPSE_LEVEL_GENERIC;
    unsigned long long xcr0 = read_xcr0();
    if ((xcr0 & 0x6) != 0x6) return LAPSE_LEVEL_GENERIC;  // XMM and YMM state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return LAPSE_LEVEL_GENERIC;
    int avx2 = (b >> 5) & 1;
    if (!(avx2 && fma && f16c)) return LAPSE_LEVEL_GENERIC;
    int avx512 = ((b >> 16) & 1) && ((b >> 17) & 1) && ((b >> 30) & 1) && ((b >> 31) & 1);  // F, DQ, BW, VL
    if (avx512 && (xcr0 & 0xE0) == 0xE0) return LAPSE_LEVEL_AVX512;  // opmask, ZMM0-15 upper, ZMM16-31
    return LAPSE_LEVEL_AVX2;
}
#else
static int detect_level(void) { return LAPSE_LEVEL_GENERIC; }
#endif

static const LapseKernelTable *tables[LAPSE_LEVEL_COUNT] = {
    &lapse_kernels_generic,
#if defined(__x86_64__)
    &lapse_kernels_avx2,
    &lapse_kernels_avx512,
#else
    NULL,
    NULL,
#endif
};

static int best_level = LAPSE_LEVEL_GENERIC;
static int active_level = LAPSE_LEVEL_GENERIC;
static int overridden = 0;
static char note[200];

__attribute__((constructor)) static void lapse_kernels_choose(void) {
    best_level = detect_level();
    active_level = best_level;
    const char *requested = getenv("LAPSE_CPU_LEVEL");
    if (!requested || !*requested || strcmp(requested, "auto") == 0) return;
    int level = -1;
    for (int l = 0; l < LAPSE_LEVEL_COUNT; l++) {
        if (tables[l] && strcmp(requested, tables[l]->name) == 0) level = l;
    }
    if (strcmp(requested, "generic") == 0) level = LAPSE_LEVEL_GENERIC;
    if (level < 0) {
        snprintf(note, sizeof note, "LAPSE_CPU_LEVEL=%.40s is not one of auto, generic, avx2, avx512; using %s",
                 requested, tables[best_level]->name);
    } else if (level > best_level) {
        snprintf(note, sizeof note, "LAPSE_CPU_LEVEL=%s needs instructions this CPU lacks; using %s",
                 tables[level]->name, tables[best_level]->name);
    } else {
        active_level = level;
        overridden = 1;
    }
    if (note[0]) fprintf(stderr, "lapse: %s\n", note);
}

const LapseKernelTable *lapse_kernels_table(int level) {
    if (level < 0 || level > best_level) return NULL;
    return tables[level];
}

const LapseKernelTable *lapse_kernels_active(void) { return tables[active_level]; }
int lapse_kernels_active_level(void) { return active_level; }
int lapse_kernels_best_level(void) { return best_level; }
int lapse_kernels_overridden(void) { return overridden; }
const char *lapse_kernels_note(void) { return note[0] ? note : NULL; }
