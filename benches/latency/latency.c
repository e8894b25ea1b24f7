/* Delivery latency of a lone record (issue 14's batching policy): how long
 * from a hook's return until `memtrack record` has written the record into
 * its output file, when the workload is idle otherwise (the worst case of
 * the batching consumer: the record waits for its latency bound, not for a
 * whole batch).
 *
 * usage: latency DIR EVENTS GAP_MS   (MEMTRACK_RING names the ring a
 *        `memtrack record --ring` already consumes into a file in DIR)
 *
 * For each event: one memtrack_alloc, then polls the total size of DIR's
 * files until it grows; prints one line of percentiles in microseconds.
 * GAP_MS between events lets the reader settle into its longest idle pause.
 * Run by scripts/bench-latency.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "memtrack.h"

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

/* Total bytes of the regular files in `dir`. */
static long long dir_bytes(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        exit(2);
    }
    long long total = 0;
    char path[4096];
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) total += st.st_size;
    }
    closedir(d);
    return total;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: latency DIR EVENTS GAP_MS\n");
        return 2;
    }
    const char *dir = argv[1];
    int events = atoi(argv[2]);
    long gap_ms = atol(argv[3]);
    if (events < 1 || gap_ms < 0) {
        fprintf(stderr, "latency: EVENTS must be >= 1 and GAP_MS >= 0\n");
        return 2;
    }
    int init = memtrack_init(NULL);
    if (init != 0) {
        fprintf(stderr, "latency: memtrack_init: %s\n", memtrack_strerror(init));
        return 2;
    }
    double *us = calloc((size_t)events, sizeof *us);
    struct timespec gap = {gap_ms / 1000, (gap_ms % 1000) * 1000000L};
    nanosleep(&gap, NULL);
    for (int i = 0; i < events; i++) {
        long long before = dir_bytes(dir);
        double start = now_us();
        memtrack_alloc(0, MEMTRACK_KIND_DRAM, (uint64_t)i + 1, 0x1000, 64);
        double deadline = start + 10e6;
        while (dir_bytes(dir) == before) {
            if (now_us() > deadline) {
                fprintf(stderr, "latency: event %d not in the file after 10 s\n", i);
                return 1;
            }
        }
        us[i] = now_us() - start;
        nanosleep(&gap, NULL);
    }
    qsort(us, (size_t)events, sizeof *us, by_value);
    printf("events %d gap_ms %ld  latency_us p50 %.0f p90 %.0f p99 %.0f max %.0f\n", events, gap_ms,
           us[events / 2], us[events * 9 / 10], us[events * 99 / 100], us[events - 1]);
    memtrack_shutdown();
    return 0;
}
