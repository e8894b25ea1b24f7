/*
 * dlopen_tls.c: libmemtrack loaded with dlopen, as Python loads tt_metal
 * (and tt_metal libmemtrack). glibc then allocates each thread's block of
 * the library's thread-locals with malloc; once threads outnumber its
 * arenas those blocks are a few hundred bytes apart, so the hook's
 * per-thread state (at the block's start, written by every hook) must
 * start a 128-byte line of its own.
 *
 * Run by tests/ffi.rs. Usage: dlopen_tls LIBMEMTRACK_SO THREADS
 *   (MEMTRACK_RING names the ring.) Each thread hooks one alloc and free,
 *   then looks up its block (dlinfo RTLD_DI_TLS_DATA). Prints
 *   "dlopen_tls: M of N thread-local blocks not 128-byte aligned".
 *
 * A failed CHECK exits with status 2.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

#define MAX_THREADS 256

typedef void (*hook_fn)(uint32_t, uint8_t, uint64_t, uint64_t, uint64_t);

static void *library;
static hook_fn hook_alloc, hook_free;
static uintptr_t blocks[MAX_THREADS];

static void *run(void *arg) {
    uintptr_t i = (uintptr_t)arg;
    hook_alloc(0, 0, i + 1, 0x1000, 4096);
    hook_free(0, 0, i + 1, 0x1000, 4096);
    void *block = NULL;
    CHECK(dlinfo(library, RTLD_DI_TLS_DATA, &block) == 0);
    blocks[i] = (uintptr_t)block;
    return NULL;
}

/* A function pointer from dlsym without the cast ISO C forbids. */
static hook_fn symbol(const char *name) {
    hook_fn f;
    void *p = dlsym(library, name);
    CHECK(p != NULL);
    memcpy(&f, &p, sizeof f);
    return f;
}

int main(int argc, char **argv) {
    CHECK(argc == 3);
    int threads = atoi(argv[2]);
    CHECK(threads > 0 && threads <= MAX_THREADS);
    library = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) {
        fprintf(stderr, "dlopen_tls: %s\n", dlerror());
        return 2;
    }
    hook_alloc = symbol("memtrack_alloc");
    hook_free = symbol("memtrack_free");
    pthread_t tids[MAX_THREADS];
    for (int i = 0; i < threads; i++) {
        CHECK(pthread_create(&tids[i], NULL, run, (void *)(uintptr_t)i) == 0);
    }
    for (int i = 0; i < threads; i++) {
        CHECK(pthread_join(tids[i], NULL) == 0);
    }
    int misaligned = 0;
    for (int i = 0; i < threads; i++) {
        CHECK(blocks[i] != 0);
        misaligned += blocks[i] % 128 != 0;
    }
    printf("dlopen_tls: %d of %d thread-local blocks not 128-byte aligned\n", misaligned, threads);
    return 0;
}
