/*
 * check.h: the one assertion macro of the ffi_tests programs (C and C++).
 *
 * A failed CHECK prints the file, line and condition to stderr and exits
 * with status 2, so the Rust harness sees which check failed. assert() is
 * not used because NDEBUG would turn the checks off.
 */
#ifndef MEMTRACK_FFI_TESTS_CHECK_H
#define MEMTRACK_FFI_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "CHECK failed: %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            exit(2);                                                             \
        }                                                                        \
    } while (0)

#endif /* MEMTRACK_FFI_TESTS_CHECK_H */
