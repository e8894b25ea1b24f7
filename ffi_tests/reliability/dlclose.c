/*
 * dlclose.c: libmemtrack loaded with dlopen(), used, and unloaded with
 * dlclose() while the program keeps running (as a plugin host would).
 *
 *   dlclose LIBMEMTRACK.so
 *
 * With MEMTRACK_RING set: attaches, records 3 allocs and 1 free, closes the
 * library, then checks /proc/self/maps, forks a child that exits (the
 * library registered a fork handler), allocates memory and returns from
 * main, so that the exit handlers run (the library registered one). If any
 * handler pointed into unloaded code, the child or the exit would crash.
 *
 * Prints "dlclose unloaded" or "dlclose still-mapped" on success.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

typedef int (*init_fn)(const char *);
typedef void (*event_fn)(uint32_t, uint8_t, uint64_t, uint64_t, uint64_t);
typedef int (*enabled_fn)(void);

static int mapped(const char *name) {
    char line[4096];
    int found = 0;
    FILE *maps = fopen("/proc/self/maps", "r");
    CHECK(maps != NULL);
    while (fgets(line, sizeof line, maps) != NULL) {
        if (strstr(line, name) != NULL) {
            found = 1;
        }
    }
    fclose(maps);
    return found;
}

int main(int argc, char **argv) {
    void *lib;
    init_fn init;
    event_fn alloc, release;
    enabled_fn enabled;
    pid_t child;
    int status = 0;
    char *scratch;

    CHECK(argc == 2);
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    /* POSIX: a data pointer converted to a function pointer through memcpy. */
    {
        void *p;
        p = dlsym(lib, "memtrack_init");
        CHECK(p != NULL);
        memcpy(&init, &p, sizeof p);
        p = dlsym(lib, "memtrack_alloc");
        CHECK(p != NULL);
        memcpy(&alloc, &p, sizeof p);
        p = dlsym(lib, "memtrack_free");
        CHECK(p != NULL);
        memcpy(&release, &p, sizeof p);
        p = dlsym(lib, "memtrack_enabled");
        CHECK(p != NULL);
        memcpy(&enabled, &p, sizeof p);
    }
    CHECK(init(NULL) == 0);
    CHECK(enabled() == 1);
    alloc(0, 0, 1, 0x1000, 100);
    alloc(0, 0, 2, 0x2000, 200);
    alloc(0, 0, 3, 0x3000, 300);
    release(0, 0, 2, 0x2000, 200);
    CHECK(dlclose(lib) == 0);

    child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        _exit(0);
    }
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    scratch = malloc(1 << 20);
    CHECK(scratch != NULL);
    memset(scratch, 1, 1 << 20);
    free(scratch);
    printf("dlclose %s\n", mapped("libmemtrack") ? "still-mapped" : "unloaded");
    fflush(stdout);
    return 0;
}
