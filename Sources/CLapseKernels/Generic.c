// The portable level: the compiler's baseline for the target (SSE2 on x86-64, NEON on arm64).
#define LEVEL generic
#define LK_NAME "generic"
#define VW 8
// Eight-lane vectors are two SSE registers here; every helper is inlined, so the ABI note clang gives for
// passing them by value does not apply.
#pragma clang diagnostic ignored "-Wpsabi"
#include "LevelKernels.h"
