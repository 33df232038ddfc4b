/* What every kernel file of batchsr's native library (batchsr/native.py) shares.
 *
 * The kernels reproduce numpy or official float roundings, so the library is built
 * with -ffp-contract=off (no fused multiply-add) and never -ffast-math (setup.py). They
 * are reentrant: the pipeline calls them from several threads, and ctypes releases the
 * GIL around each call. */
#ifndef BATCHSR_KERNELS_H
#define BATCHSR_KERNELS_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* One build runs at each machine's best width (AVX-512, AVX2 or SSE2): glibc picks the
 * clone when the library loads, so a wheel or CI build is never tied to its builder. */
#define KERNEL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define KERNEL_CLONES
#endif

#endif
