/*
 * api.c: every function of include/memtrack.h, called from C11.
 *
 * Run by tests/ffi.rs, which builds it against libmemtrack.so and
 * libmemtrack.a, with and without ASan/UBSan, and checks what reached the
 * ring. Usage: api on | off | corrupt PATH
 *
 *   on       MEMTRACK_RING names a fresh ring. Attaches lazily, records a
 *            fixed sequence of events (the harness asserts it exactly), then
 *            shuts down twice and checks that later events are dropped.
 *   off      MEMTRACK_RING is unset: every hook is a no-op, nothing printed.
 *   corrupt  MEMTRACK_RING and PATH name a file that is not a ring: the
 *            program carries on untracked after exactly one stderr line.
 *
 * Prints "api <mode> ok" on success; a failed CHECK exits with status 2.
 */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "memtrack.h"

/* Every result code of the header, for memtrack_strerror. */
static const int codes[] = {
    MEMTRACK_OK,          MEMTRACK_ERR_INVALID,    MEMTRACK_ERR_IO,
    MEMTRACK_ERR_NO_SPACE, MEMTRACK_ERR_PERMISSION, MEMTRACK_ERR_CORRUPT,
    MEMTRACK_ERR_VERSION, MEMTRACK_ERR_PROCESS_TABLE_FULL, MEMTRACK_ERR_SHUTDOWN,
    MEMTRACK_ERR_INTERNAL,
};
#define NCODES (sizeof codes / sizeof codes[0])

/* strerror works whether or not the process is attached: a static,
 * non-empty, distinct message per code, and a non-NULL one for junk. */
static void check_strerror(void) {
    for (size_t i = 0; i < NCODES; i++) {
        const char *text = memtrack_strerror(codes[i]);
        CHECK(text != NULL && text[0] != '\0');
        for (size_t j = 0; j < i; j++) {
            CHECK(strcmp(text, memtrack_strerror(codes[j])) != 0);
        }
    }
    CHECK(memtrack_strerror(12345) != NULL);
    CHECK(memtrack_strerror(-12345) != NULL);
}

/* Calls that must never produce a record: NULL pointers. */
static void null_pointers(void) {
    memtrack_alloc_buffer(NULL);
    memtrack_free_buffer(NULL);
    memtrack_mark(NULL);
    memtrack_scope_begin(NULL);
    memtrack_scope_end(); /* none open: a no-op */
}

/* memtrack_live_usage while one_of_each holds its two buffers: this
 * process's DRAM buffer (4096 bytes) and its ALIAS L1 buffer (a buffer, no
 * bytes), in (device, kind) order; nothing when not tracking. */
static void check_live_usage(uint32_t device, int tracking) {
    memtrack_live cells[3];
    memset(cells, 0xff, sizeof cells);
    CHECK(memtrack_live_usage(NULL, 0) == (tracking ? 2u : 0u));
    /* Too little room: the count says so; only the room is written. */
    CHECK(memtrack_live_usage(cells, 1) == (tracking ? 2u : 0u));
    CHECK(cells[1].device_id == UINT32_MAX);
    CHECK(memtrack_live_usage(cells, 3) == (tracking ? 2u : 0u));
    /* The default pool has room: nothing untracked (ffi_tests/untracked.c
     * fills a small one). */
    int64_t untracked_bytes = -1, untracked_buffers = -1;
    uint64_t untracked_events = 1;
    CHECK(memtrack_untracked_usage(&untracked_bytes, &untracked_buffers, &untracked_events) == MEMTRACK_OK);
    CHECK(untracked_bytes == 0 && untracked_buffers == 0 && untracked_events == 0);
    CHECK(memtrack_untracked_usage(NULL, NULL, NULL) == MEMTRACK_OK);
    if (tracking) {
        CHECK(cells[0].device_id == device && cells[0].kind == MEMTRACK_KIND_DRAM);
        CHECK(cells[0].live_bytes == 4096 && cells[0].live_buffers == 1);
        CHECK(cells[1].device_id == device && cells[1].kind == MEMTRACK_KIND_L1);
        CHECK(cells[1].live_bytes == 0 && cells[1].live_buffers == 1);
    }
}

/* Every event function once; used with tracking on and off. */
static void one_of_each(uint32_t device, int tracking) {
    memtrack_buffer b;
    memset(&b, 0, sizeof b);
    b.buffer_id = 100 + device;
    b.parent_id = 7;
    b.address = 0x20000;
    b.size = 2048;
    b.device_id = device;
    b.kind = MEMTRACK_KIND_L1;
    b.flags = MEMTRACK_FLAG_ALIAS;

    memtrack_set_capacity(device, MEMTRACK_KIND_DRAM, (uint64_t)1 << 30);
    memtrack_mark("phase-1");
    memtrack_alloc(device, MEMTRACK_KIND_DRAM, 1, 0x1000, 4096);
    memtrack_alloc_buffer(&b);
    check_live_usage(device, tracking);
    null_pointers();
    memtrack_free_buffer(&b);
    memtrack_free(device, MEMTRACK_KIND_DRAM, 1, 0x1000, 4096);
    CHECK(memtrack_live_usage(NULL, 0) == 0);
    /* 49 characters: the MARK record holds 36, a TEXT record the rest. */
    memtrack_mark("0123456789abcdefghijklmnopqrstuvwxyz-and-the-rest");
}

static int mode_on(void) {
    /* The first call attaches from MEMTRACK_RING; init is then idempotent,
     * whatever name it is given. */
    CHECK(memtrack_enabled() == 1);
    CHECK(memtrack_init(NULL) == MEMTRACK_OK);
    CHECK(memtrack_init("some-other-ring") == MEMTRACK_OK);
    one_of_each(3, 1);

    memtrack_shutdown();
    CHECK(memtrack_enabled() == 0);
    memtrack_shutdown(); /* twice: a no-op */
    /* After shutdown: no records, and no re-attaching. */
    one_of_each(4, 0);
    CHECK(memtrack_init(NULL) == MEMTRACK_ERR_SHUTDOWN);
    CHECK(memtrack_enabled() == 0);
    check_strerror();
    return 0;
}

static int mode_off(void) {
    CHECK(memtrack_enabled() == 0);
    one_of_each(0, 0);
    CHECK(memtrack_enabled() == 0);
    memtrack_shutdown();
    memtrack_shutdown();
    one_of_each(1, 0);
    CHECK(memtrack_enabled() == 0);
    check_strerror();
    return 0;
}

static int mode_corrupt(const char *path) {
    /* The first hook tries MEMTRACK_RING, fails, prints one line. */
    one_of_each(0, 0);
    CHECK(memtrack_enabled() == 0);
    /* An explicit init fails the same way, without a second line. */
    CHECK(memtrack_init(path) == MEMTRACK_ERR_CORRUPT);
    CHECK(memtrack_enabled() == 0);
    one_of_each(1, 0);
    memtrack_shutdown();
    memtrack_shutdown();
    return 0;
}

int main(int argc, char **argv) {
    int rc = 1;
    if (argc == 2 && strcmp(argv[1], "on") == 0) {
        rc = mode_on();
    } else if (argc == 2 && strcmp(argv[1], "off") == 0) {
        rc = mode_off();
    } else if (argc == 3 && strcmp(argv[1], "corrupt") == 0) {
        rc = mode_corrupt(argv[2]);
    } else {
        fprintf(stderr, "usage: api on | off | corrupt PATH\n");
        return 1;
    }
    printf("api %s ok\n", argv[1]);
    return rc;
}
