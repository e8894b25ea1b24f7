/* One process's hooks on one device, in a loop: run two at once on one ring
 * to see whether two processes hooking the same device contend (their
 * counter cells on one cache line did: src/counters.rs, `cell_home`).
 * Prints the thread CPU time per event.
 *   cc -O2 -Iinclude benches/same_device.c -Ltarget/release -lmemtrack \
 *      -Wl,-rpath,$PWD/target/release -o same_device
 *   rm -f /dev/shm/memtrack-sd; export MEMTRACK_RING=/dev/shm/memtrack-sd
 *   ./same_device 20000000 0 & ./same_device 20000000 0; wait   # one device
 *   ./same_device 20000000 0 & ./same_device 20000000 1; wait   # two devices
 * With no reader attached both processes run at once on two CPUs (records
 * past the full ring are dropped and counted: the counters are what is
 * measured); under `memtrack record` the reader takes a CPU of its own. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "memtrack.h"
int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: same_device EVENT_PAIRS DEVICE\n");
        return 2;
    }
    unsigned long n = strtoul(argv[1], 0, 10);
    unsigned device = (unsigned)strtoul(argv[2], 0, 10);
    struct timespec a, b;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    for (unsigned long i = 0; i < n; i++) {
        memtrack_alloc(device, 0, i + 1, 0x1000 + i * 64, 4096);
        memtrack_free(device, 0, i + 1, 0x1000 + i * 64, 4096);
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    printf("device %u: %.1f ns/event\n", device,
           ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / (2.0 * n));
    return 0;
}
