/* The workload of rich.mtr (recorded with `memtrack record -o rich.mtr --
 * ./rich`): frees, leaks, duplicates, a size mismatch, an unknown free,
 * an alias, capacities, scopes, marks, a child process, and sizes of
 * 2^43, 2^63 and 2^64-1 bytes. Build: cc -I../../../include rich.c
 * -L../../../target/release -lmemtrack. */
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>
#include "memtrack.h"

static void buffer(int alloc, uint64_t id, uint32_t device, uint8_t kind, uint64_t size, uint8_t flags) {
    memtrack_buffer b = { .buffer_id = id, .parent_id = id / 10, .address = 0x10000 + id * 0x1000,
                          .size = size, .device_id = device, .kind = kind, .flags = flags };
    if (alloc) memtrack_alloc_buffer(&b); else memtrack_free_buffer(&b);
}

int main(void) {
    memtrack_set_capacity(0, MEMTRACK_KIND_DRAM, 12ull << 30);
    memtrack_mark("start");
    memtrack_scope_begin("layer1");
    for (uint64_t id = 1; id <= 60; id++) buffer(1, id, id % 3, id % 2, 1000 * id, 0);
    memtrack_scope_begin("matmul");
    for (uint64_t id = 61; id <= 80; id++) buffer(1, id, 0, MEMTRACK_KIND_L1, 4096, 0);
    memtrack_scope_end();
    memtrack_mark("warmup done");
    for (uint64_t id = 1; id <= 60; id += 2) buffer(0, id, id % 3, id % 2, 1000 * id, 0);
    memtrack_scope_end();
    buffer(1, 4, 4 % 3, 0, 777, 0);          /* duplicate of a live buffer */
    buffer(0, 6, 0, 0, 5, 0);                 /* size mismatch */
    buffer(0, 9999, 0, 0, 10, 0);             /* unknown free */
    buffer(1, 500, 1, MEMTRACK_KIND_DRAM, 8192, MEMTRACK_FLAG_ALIAS);
    buffer(1, 1001, 3, MEMTRACK_KIND_DRAM, 1ull << 43, 0);
    buffer(1, 1002, 3, MEMTRACK_KIND_L1, 1ull << 63, 0);
    buffer(1, 1003, 3, MEMTRACK_KIND_TRACE, UINT64_MAX, 0);
    pid_t child = fork();
    if (child == 0) {
        for (uint64_t id = 1; id <= 10; id++) buffer(1, id, 1, MEMTRACK_KIND_CB, 100 * id, 0);
        buffer(0, 1, 1, MEMTRACK_KIND_CB, 100, 0);
        _exit(0);
    }
    waitpid(child, 0, 0);
    memtrack_mark("end");
    return 0;
}
