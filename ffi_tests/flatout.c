// The lossless stress: N threads call memtrack_alloc/memtrack_free in
// pairs as fast as they can (no leaks), each timing every hook call, so the
// ring fills whenever the writers outrun the reader. Run it under
// `memtrack record -- flatout ...` or with MEMTRACK_RING set while
// `memtrack record --ring NAME` runs (scripts/lossless.sh does both).
//
// Prints one JSON line: threads, records written, wall time, and the
// longest single hook call any thread saw (max_hook_ns), which includes the
// time the kernel ran other threads while the hook was on the CPU's queue.
//
// usage: flatout [--threads N] [--records N]   (records in total, all threads)

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "memtrack.h"

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct worker {
    pthread_t thread;
    unsigned index;
    uint64_t pairs;
    uint64_t max_hook_ns;
};

static void* run(void* arg) {
    struct worker* w = arg;
    uint64_t worst = 0;
    for (uint64_t i = 0; i < w->pairs; ++i) {
        uint64_t id = ((uint64_t)w->index << 40) | i;
        uint64_t t0 = now_ns();
        memtrack_alloc(w->index % 8, MEMTRACK_KIND_DRAM, id, 0x1000 + (i % 64) * 4096, 4096);
        uint64_t t1 = now_ns();
        memtrack_free(w->index % 8, MEMTRACK_KIND_DRAM, id, 0x1000 + (i % 64) * 4096, 4096);
        uint64_t t2 = now_ns();
        if (t1 - t0 > worst) worst = t1 - t0;
        if (t2 - t1 > worst) worst = t2 - t1;
    }
    w->max_hook_ns = worst;
    return NULL;
}

int main(int argc, char** argv) {
    unsigned threads = 2;
    uint64_t records = 4000000;
    for (int i = 1; i + 1 < argc; i += 2) {
        uint64_t value = strtoull(argv[i + 1], NULL, 10);
        if (strcmp(argv[i], "--threads") == 0) {
            threads = (unsigned)value;
        } else if (strcmp(argv[i], "--records") == 0) {
            records = value;
        } else {
            fprintf(stderr, "flatout: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    if (threads == 0 || threads > 1024 || records < 2 * (uint64_t)threads) {
        fprintf(stderr, "flatout: need 1..1024 threads and at least 2 records per thread\n");
        return 2;
    }
    int init = memtrack_init(NULL);
    if (init != MEMTRACK_OK) {
        fprintf(stderr, "flatout: memtrack_init: %s\n", memtrack_strerror(init));
        return 1;
    }
    struct worker* workers = calloc(threads, sizeof *workers);
    if (workers == NULL) return 1;
    uint64_t start = now_ns();
    for (unsigned t = 0; t < threads; ++t) {
        workers[t].index = t;
        workers[t].pairs = records / 2 / threads;
        if (pthread_create(&workers[t].thread, NULL, run, &workers[t]) != 0) {
            fprintf(stderr, "flatout: pthread_create failed\n");
            return 1;
        }
    }
    uint64_t worst = 0, written = 0;
    for (unsigned t = 0; t < threads; ++t) {
        pthread_join(workers[t].thread, NULL);
        if (workers[t].max_hook_ns > worst) worst = workers[t].max_hook_ns;
        written += 2 * workers[t].pairs;
    }
    double seconds = (double)(now_ns() - start) / 1e9;
    printf("{\"threads\":%u,\"records\":%llu,\"seconds\":%.3f,\"max_hook_ns\":%llu}\n", threads,
           (unsigned long long)written, seconds, (unsigned long long)worst);
    free(workers);
    return 0;
}
