// AVX-512 F/DQ/BW/VL (Skylake-SP, Ice Lake, Sapphire Rapids, Zen 4 and later), sixteen lanes for the elementwise
// loops; called only after CPUID and XGETBV say the CPU and OS support it (ZMM state saved).
#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx,avx2,fma,f16c,avx512f,avx512dq,avx512bw,avx512vl"))), apply_to = function)
#define LEVEL avx512
#define LK_NAME "avx512"
#define VW 16
#include "LevelKernels.h"
#pragma clang attribute pop
#endif
