/*
 * A C client of an installed libmemtrack, built by scripts/test-install.sh
 * with `pkg-config --cflags --libs memtrack` (and memtrack-static). The same
 * workload as main.cpp, which test-install.sh checks in the ring afterwards:
 *
 *   device D, DRAM: 8192 live bytes, 3 live buffers (one an ALIAS of 0 bytes)
 *   device D, L1:   1000 live bytes, 1 live buffer
 *   capacity of (D, DRAM): 1 GiB; the process exited cleanly.
 *
 * With a third argument "hold" it waits for end of file on stdin before
 * shutting down, so a monitor sees it running with that usage.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <memtrack.h>

static int failures = 0;

static void check(int ok, const char *what) {
    if (!ok) {
        fprintf(stderr, "memtrack_c_client: FAILED: %s\n", what);
        ++failures;
    }
}

int main(int argc, char **argv) {
    const char *ring;
    uint32_t device;
    int rc;
    uint64_t id;

    if (argc != 3 && !(argc == 4 && strcmp(argv[3], "hold") == 0)) {
        fprintf(stderr, "usage: %s RING DEVICE [hold]\n", argv[0]);
        return 2;
    }
    ring = argv[1];
    device = (uint32_t)strtoul(argv[2], NULL, 10);

    if (getenv("MEMTRACK_RING") == NULL) {
        check(memtrack_enabled() == 0, "tracking is off until memtrack_init or MEMTRACK_RING");
    }
    rc = memtrack_init(ring);
    if (rc != MEMTRACK_OK) {
        fprintf(stderr, "memtrack_c_client: memtrack_init(%s) = %d (%s)\n", ring, rc, memtrack_strerror(rc));
        return 1;
    }
    check(memtrack_enabled() == 1, "memtrack_enabled() == 1 after memtrack_init");
    check(strlen(memtrack_strerror(MEMTRACK_ERR_NO_SPACE)) > 0, "memtrack_strerror describes a code");

    memtrack_set_capacity(device, MEMTRACK_KIND_DRAM, (uint64_t)1 << 30);
    memtrack_mark("c-client");
    for (id = 1; id <= 3; ++id) {
        memtrack_alloc(device, MEMTRACK_KIND_DRAM, id, 0x10000 * id, 4096);
    }
    memtrack_free(device, MEMTRACK_KIND_DRAM, 2, 0x20000, 4096);
    {
        memtrack_buffer l1 = {10, 0, 0xa0000, 1000, 0, MEMTRACK_KIND_L1, 0, 0};
        memtrack_buffer alias = {11, 0, 0xb0000, 4096, 0, MEMTRACK_KIND_DRAM, MEMTRACK_FLAG_ALIAS, 0};
        l1.device_id = device;
        alias.device_id = device;
        memtrack_alloc_buffer(&l1);
        memtrack_alloc_buffer(&alias);
    }

    if (argc == 4) {
        while (getchar() != EOF) {
        }
    }
    memtrack_shutdown();
    check(memtrack_enabled() == 0, "memtrack_enabled() == 0 after memtrack_shutdown");
    if (failures != 0) return 1;
    printf("memtrack_c_client: recorded into %s on device %u\n", ring, (unsigned)device);
    return 0;
}
