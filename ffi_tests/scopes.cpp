/*
 * scopes.cpp: scopes and long labels through the C ABI and the RAII guard
 * of memtrack.hpp, run by cli/tests/attribution.rs under `memtrack record`.
 * Usage: scopes leaky | clean | fork | reuse | ops
 *
 *   leaky  leaves buffers in known scopes and one size mismatch:
 *            ""                       DRAM 100 (id 1)
 *            test_a                   DRAM 1000 (id 2)
 *            test_a/matmul            L1 300 (id 4); L1 5000 (id 3) freed
 *                                     outside any scope, after the L1 peak
 *            test_b/add (x1000)       DRAM 64 each, all freed
 *            <300 x's>                DRAM 7 (id 5)
 *            worker/test_a (thread)   DRAM 2000 (id 6)
 *            mm                       L1 64 (id 7), freed as 32 bytes
 *          and marks a 300-byte label "phase-mmm...m".
 *   clean  the same scopes, every buffer freed with its size.
 *
 *   fork   opens "outer/inner", allocates DRAM 10 (id 10), forks; the
 *          child (a process of its own, with its own scope ids) allocates
 *          DRAM 20 (id 20) in the inherited scopes and exits.
 *
 *   reuse  buffer ids freed and allocated again, as tt_metal's allocator
 *          reuses addresses and a test reuses ids: DRAM id 1 allocated and
 *          freed 3 times, then allocated (4000 bytes) and left; DRAM id 2
 *          (500) left; DRAM id 3 allocated and freed twice, then allocated
 *          (200) and left. Three remaining buffers, seven earlier lifetimes.
 *
 *   ops    memtrack_tt_metal.hpp's op_begin/op_end (what the tt-metal patch
 *          calls from GraphTracker): "ttnn::add" then, inside it, a 300-byte
 *          name that is not NUL-terminated (kept to 255 bytes); DRAM 30
 *          (id 30) allocated in the inner op.
 *
 * Prints "scopes <mode> ok"; a failed CHECK exits with status 2.
 */
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "check.h"
#include "memtrack.hpp"
#include "memtrack_tt_metal.hpp"

static int fork_mode() {
    memtrack_scope_begin("outer");
    memtrack_scope_begin("inner");
    memtrack_alloc(0, MEMTRACK_KIND_DRAM, 10, 0x1000, 10);
    const pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        memtrack_alloc(0, MEMTRACK_KIND_DRAM, 20, 0x2000, 20);
        memtrack_scope_end();
        memtrack_scope_end();
        std::exit(0);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    memtrack_scope_end();
    memtrack_scope_end();
    std::printf("scopes fork ok\n");
    return 0;
}

static int ops_mode() {
    const std::string add = "ttnn::add-and-more";
    memtrack::tt_metal::op_begin(add.data(), 9); /* "ttnn::add" */
    const std::string inner(300, 'o');
    memtrack::tt_metal::op_begin(inner.data(), inner.size());
    memtrack_alloc(0, MEMTRACK_KIND_DRAM, 30, 0x3000, 30);
    memtrack::tt_metal::op_end();
    memtrack::tt_metal::op_end();
    std::printf("scopes ops ok\n");
    return 0;
}

static int reuse_mode() {
    const std::uint8_t dram = MEMTRACK_KIND_DRAM;
    for (int i = 0; i < 3; i++) {
        memtrack_alloc(0, dram, 1, 0x1000, 100);
        memtrack_free(0, dram, 1, 0x1000, 100);
    }
    memtrack_alloc(0, dram, 1, 0x1000, 4000);
    memtrack_alloc(0, dram, 2, 0x8000, 500);
    for (int i = 0; i < 2; i++) {
        memtrack_alloc(0, dram, 3, 0x9000, 50);
        memtrack_free(0, dram, 3, 0x9000, 50);
    }
    memtrack_alloc(0, dram, 3, 0x9000, 200);
    std::printf("scopes reuse ok\n");
    return 0;
}

int main(int argc, char** argv) {
    CHECK(argc == 2);
    if (std::strcmp(argv[1], "reuse") == 0) {
        return reuse_mode();
    }
    if (std::strcmp(argv[1], "fork") == 0) {
        return fork_mode();
    }
    if (std::strcmp(argv[1], "ops") == 0) {
        return ops_mode();
    }
    const bool leaky = std::strcmp(argv[1], "leaky") == 0;
    CHECK(leaky || std::strcmp(argv[1], "clean") == 0);
    const std::uint8_t dram = MEMTRACK_KIND_DRAM, l1 = MEMTRACK_KIND_L1;

    memtrack_scope_end();         /* none open: a no-op */
    memtrack_scope_begin(nullptr); /* a no-op: pushes nothing */
    memtrack_alloc(0, dram, 1, 0x1000, 100);

    memtrack_scope_begin("test_a");
    memtrack_alloc(0, dram, 2, 0x2000, 1000);
    memtrack_scope_begin("matmul");
    memtrack_alloc(0, l1, 3, 0x100, 5000);
    memtrack_alloc(0, l1, 4, 0x200, 300);
    memtrack_scope_end();
    memtrack_scope_end();
    memtrack_scope_end(); /* none open again */

    {
        memtrack::scope test{"test_b"};
        memtrack::scope none{nullptr}; /* opens and closes nothing */
        for (std::uint64_t i = 0; i < 1000; i++) {
            memtrack::scope op{"add"};
            memtrack_alloc(0, dram, 100 + i, 0x10000 + 64 * i, 64);
            memtrack_free(0, dram, 100 + i, 0x10000 + 64 * i, 64);
        }
    }

    const std::string long_name(300, 'x');
    memtrack_scope_begin(long_name.c_str());
    memtrack_alloc(0, dram, 5, 0x3000, 7);
    memtrack_scope_end();

    const std::string label = "phase-" + std::string(294, 'm');
    memtrack_mark(label.c_str());

    std::thread worker([dram] {
        memtrack::scope outer{"worker"};
        memtrack::scope inner{"test_a"};
        memtrack_alloc(0, dram, 6, 0x4000, 2000);
    });
    worker.join();

    memtrack_free(0, l1, 3, 0x100, 5000); /* attributed to where it was allocated */

    memtrack_scope_begin("mm");
    memtrack_alloc(0, l1, 7, 0x300, 64);
    memtrack_scope_end();

    if (leaky) {
        memtrack_free(0, l1, 7, 0x300, 32);
    } else {
        memtrack_free(0, l1, 7, 0x300, 64);
        memtrack_free(0, dram, 1, 0x1000, 100);
        memtrack_free(0, dram, 2, 0x2000, 1000);
        memtrack_free(0, l1, 4, 0x200, 300);
        memtrack_free(0, dram, 5, 0x3000, 7);
        memtrack_free(0, dram, 6, 0x4000, 2000);
    }
    std::printf("scopes %s ok\n", argv[1]);
    return 0;
}
