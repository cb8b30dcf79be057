// AVX2 + FMA (Haswell, Zen 1 and later): every function below is compiled for those features only; the dispatcher
// calls them only after CPUID and XGETBV say the CPU and OS support them.
#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx,avx2,fma,f16c"))), apply_to = function)
#define LEVEL avx2
#define LK_NAME "avx2"
#define VW 8
#include "LevelKernels.h"
#pragma clang attribute pop
#endif
