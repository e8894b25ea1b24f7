/* The hook's cost at a steady, moderate rate (issue 14's batching policy):
 * below the rate that fills a whole batch within the latency bound, the
 * consumer takes partial batches at the bound, reading slots near the
 * writer; this measures what that costs the writer, against a reader that
 * takes everything at once.
 *
 * usage: paced RATE_PER_MS SECONDS   (MEMTRACK_RING set, a reader attached)
 *
 * Writes bursts of 64 records flat out, paced to RATE_PER_MS records per
 * millisecond on average (busy-waiting between bursts, so the writer stays
 * on its CPU), and prints the mean time per hook inside the bursts.
 * Run by scripts/bench-latency.sh --paced.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "memtrack.h"

#define BURST 64

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: paced RATE_PER_MS SECONDS\n");
        return 2;
    }
    double rate_per_ms = atof(argv[1]), seconds = atof(argv[2]);
    if (!(rate_per_ms > 0) || !(seconds > 0)) {
        fprintf(stderr, "paced: RATE_PER_MS and SECONDS must be positive\n");
        return 2;
    }
    int init = memtrack_init(NULL);
    if (init != 0) {
        fprintf(stderr, "paced: memtrack_init: %s\n", memtrack_strerror(init));
        return 2;
    }
    uint64_t burst_every = (uint64_t)(BURST * 1e6 / rate_per_ms);
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), next = start;
    uint64_t in_hooks = 0, records = 0, id = 0;
    while (next < end) {
        while (now_ns() < next) {
        }
        uint64_t t0 = now_ns();
        for (int i = 0; i < BURST / 2; i++) {
            id++;
            memtrack_alloc(0, MEMTRACK_KIND_DRAM, id, id << 12, 64);
            memtrack_free(0, MEMTRACK_KIND_DRAM, id, id << 12, 64);
        }
        in_hooks += now_ns() - t0;
        records += BURST;
        next += burst_every;
    }
    printf("rate %.0f/ms  records %llu  ns_per_hook %.1f\n", rate_per_ms, (unsigned long long)records,
           (double)in_hooks / (double)records);
    memtrack_shutdown();
    return 0;
}
