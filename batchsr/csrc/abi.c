/* native.ABI_VERSION: bumped with every change of a signature or meaning in the library,
 * so that a library built from older sources is refused rather than called wrongly. */
int batchsr_native_abi(void) { return 6; }
