/* fuzz_target.h — the two entry points every fuzz target defines. */
#ifndef FUZZ_TARGET_H
#define FUZZ_TARGET_H
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#endif
