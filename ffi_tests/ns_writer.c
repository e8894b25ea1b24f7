/*
 * ns_writer.c: one writer process for the PID-namespace tests
 * (cli/tests/namespaces.rs), usually run as pid 1 of its own namespace
 * (`unshare --pid --fork --mount-proc ns_writer ...`).
 *
 * Usage: ns_writer TOTAL KEEP END [TAG]
 *   Names itself "w", allocates TOTAL buffers of 4096 bytes (device 0,
 *   DRAM, ids 1..TOTAL) through $MEMTRACK_RING, frees all but the first
 *   KEEP; with TAG, marks "TAG alloc" before the allocations and "TAG
 *   free" before the frees, and after them frees buffer 999, which it
 *   never allocated (an unknown free: an anomaly of its own). Then it
 *   prints "ready <pid>" (its pid in its own namespace) and ends:
 *     exit   after 500 ms, exit(0) (memtrack shuts down cleanly)
 *     kill   after 500 ms, SIGKILL itself (the process died; not as pid 1
 *            of a namespace, which no signal of its own can kill)
 *     hold   when stdin reaches end of file, exit(0)
 *   The pause lets a reader see it alive (and find its pid in the
 *   reader's namespace) before it ends.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "memtrack.h"

static void pause_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) != 0) {
    }
}

int main(int argc, char **argv) {
    CHECK(argc == 4 || argc == 5);
    long total = strtol(argv[1], NULL, 10);
    long keep = strtol(argv[2], NULL, 10);
    const char *end = argv[3];
    const char *tag = argc == 5 ? argv[4] : NULL;
    CHECK(total >= keep && keep >= 0 && total < 999);
    CHECK(prctl(PR_SET_NAME, "w", 0, 0, 0) == 0);
    CHECK(memtrack_init(NULL) == MEMTRACK_OK);
    char label[128];
    if (tag != NULL) {
        CHECK(snprintf(label, sizeof label, "%s alloc", tag) < (int)sizeof label);
        memtrack_mark(label);
    }
    for (long id = 1; id <= total; id++) {
        memtrack_alloc(0, MEMTRACK_KIND_DRAM, (uint64_t)id, 0x1000 * (uint64_t)id, 4096);
    }
    if (tag != NULL) {
        CHECK(snprintf(label, sizeof label, "%s free", tag) < (int)sizeof label);
        memtrack_mark(label);
    }
    for (long id = keep + 1; id <= total; id++) {
        memtrack_free(0, MEMTRACK_KIND_DRAM, (uint64_t)id, 0x1000 * (uint64_t)id, 4096);
    }
    if (tag != NULL) {
        memtrack_free(0, MEMTRACK_KIND_DRAM, 999, 0, 4096);
    }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    if (strcmp(end, "hold") == 0) {
        char buf[64];
        while (read(STDIN_FILENO, buf, sizeof buf) > 0) {
        }
        return 0;
    }
    pause_ms(500);
    if (strcmp(end, "kill") == 0) {
        raise(SIGKILL);
        CHECK(!"SIGKILL did not end this process (pid 1 of a namespace?)");
    }
    CHECK(strcmp(end, "exit") == 0);
    return 0;
}
