/*
 * untracked.c: memtrack_untracked_usage, the part of this process's usage
 * that memtrack_live_usage cannot show because the ring's counter pool was
 * full.
 *
 * Run by tests/ffi.rs. Usage: untracked on DEVICES | off
 *
 *   on   MEMTRACK_RING names a ring that does not exist yet and
 *        MEMTRACK_COUNTER_CELLS a pool smaller than DEVICES, so this process
 *        creates the ring and fills its pool: one 4096-byte DRAM buffer on
 *        each of DEVICES devices takes one cell each until none is left, and
 *        the rest are untracked. Checks that live + untracked is exactly what
 *        was allocated, that freeing everything brings both back to zero, and
 *        that NULL outputs and a shut-down process are handled. Prints
 *        "untracked on ok: E events of D devices, C cells" (E: untracked
 *        events after the allocations).
 *   off  MEMTRACK_RING is unset: the figure is zeros, MEMTRACK_OK.
 *
 * A failed CHECK exits with status 2.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "memtrack.h"

#define BUFFER_SIZE 4096

/* Sums of memtrack_live_usage over every (device, kind); returns the cells. */
static uint32_t live_totals(int64_t *bytes, int64_t *buffers) {
    uint32_t count = memtrack_live_usage(NULL, 0);
    memtrack_live *cells = calloc(count + 1, sizeof *cells);
    CHECK(cells != NULL);
    CHECK(memtrack_live_usage(cells, count) == count);
    *bytes = 0;
    *buffers = 0;
    for (uint32_t i = 0; i < count; i++) {
        *bytes += cells[i].live_bytes;
        *buffers += cells[i].live_buffers;
    }
    free(cells);
    return count;
}

/* Junk first, so that a figure the function failed to write shows. */
static void untracked(int64_t *bytes, int64_t *buffers, uint64_t *events) {
    *bytes = -12345;
    *buffers = -12345;
    *events = 12345;
    CHECK(memtrack_untracked_usage(bytes, buffers, events) == MEMTRACK_OK);
}

static void check_zero(void) {
    int64_t bytes, buffers;
    uint64_t events;
    untracked(&bytes, &buffers, &events);
    CHECK(bytes == 0 && buffers == 0 && events == 0);
}

static int mode_on(uint32_t devices) {
    CHECK(memtrack_enabled() == 1);
    int64_t bytes, buffers, live_bytes, live_buffers;
    uint64_t events;
    untracked(&bytes, &buffers, &events);
    CHECK(bytes == 0 && buffers == 0 && events == 0);

    for (uint32_t d = 0; d < devices; d++) {
        memtrack_alloc(d, MEMTRACK_KIND_DRAM, d + 1, 0x1000, BUFFER_SIZE);
    }
    uint32_t cells = live_totals(&live_bytes, &live_buffers);
    untracked(&bytes, &buffers, &events);
    /* The pool is full: some devices are not in memtrack_live_usage ... */
    CHECK(cells < devices);
    CHECK(events > 0);
    /* ... and each of them is here, one event and one buffer each. */
    CHECK(events == devices - cells);
    CHECK(buffers == (int64_t)events);
    CHECK(bytes == (int64_t)events * BUFFER_SIZE);
    CHECK(live_buffers + buffers == (int64_t)devices);
    CHECK(live_bytes + bytes == (int64_t)devices * BUFFER_SIZE);
    uint64_t after_allocs = events;

    /* Each output is optional. */
    CHECK(memtrack_untracked_usage(NULL, NULL, NULL) == MEMTRACK_OK);
    uint64_t only_events = 0;
    CHECK(memtrack_untracked_usage(NULL, NULL, &only_events) == MEMTRACK_OK);
    CHECK(only_events == after_allocs);

    /* Freeing everything: the frees of untracked buffers are untracked too. */
    for (uint32_t d = 0; d < devices; d++) {
        memtrack_free(d, MEMTRACK_KIND_DRAM, d + 1, 0x1000, BUFFER_SIZE);
    }
    CHECK(live_totals(&live_bytes, &live_buffers) == 0);
    untracked(&bytes, &buffers, &events);
    CHECK(bytes == 0 && buffers == 0);
    CHECK(events == 2 * after_allocs);

    /* After shutdown this process records nothing: zeros. */
    memtrack_shutdown();
    check_zero();
    printf("untracked on ok: %llu events of %u devices, %u cells\n", (unsigned long long)after_allocs,
           devices, cells);
    return 0;
}

static int mode_off(void) {
    CHECK(memtrack_enabled() == 0);
    memtrack_alloc(0, MEMTRACK_KIND_DRAM, 1, 0x1000, BUFFER_SIZE);
    check_zero();
    printf("untracked off ok\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "on") == 0) {
        return mode_on((uint32_t)strtoul(argv[2], NULL, 10));
    }
    if (argc == 2 && strcmp(argv[1], "off") == 0) {
        return mode_off();
    }
    fprintf(stderr, "usage: untracked on DEVICES | off\n");
    return 1;
}
