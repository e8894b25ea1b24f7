/* Allocates N buffers through libmemtrack and exits without freeing them:
 * a recording with N remaining buffers, written through the real ring, for
 * the reader-memory figures of docs/PERFORMANCE.md:
 *   cc -O2 -Iinclude benches/leaks.c -Ltarget/release -lmemtrack \
 *      -Wl,-rpath,$PWD/target/release -o leaks
 *   memtrack record -o leaks20m.mtr -- ./leaks 20000000
 *   /usr/bin/time -v memtrack report leaks20m.mtr --json > /dev/null */
#include <stdlib.h>
#include "memtrack.h"
int main(int argc, char **argv) {
    unsigned long n = argc > 1 ? strtoul(argv[1], 0, 10) : 1000000;
    for (unsigned long i = 0; i < n; i++) {
        memtrack_buffer b = { .buffer_id = i + 1, .parent_id = 0, .address = 0x1000 + 4096 * i,
                              .size = 4096 + (i % 7) * 1024, .device_id = (unsigned)(i % 8),
                              .kind = (unsigned char)(i % 2), .flags = 0 };
        memtrack_alloc_buffer(&b);
    }
    return 0;
}
