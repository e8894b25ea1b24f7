// concurrency.cpp: many writers on one ring, from C++17 through the C ABI.
//
// Usage (MEMTRACK_RING names the ring; tests/ffi.rs counts the records):
//   concurrency threads N M BASE
//       N threads start together and each records M alloc/free pairs of
//       its own buffers (ids BASE + t * 2^32 + i, device t % 8, kind L1).
//       Run as two processes at once for the two-process test.
//   concurrency fork M
//       The main thread allocates M buffers (ids 1..M); a second thread
//       records M alloc/free pairs (ids 2^40 + i); halfway through, the main
//       thread forks. The child records M alloc/free pairs (ids 2^41 + i)
//       and exits; the parent frees its M buffers. Prints the child's pid.
//   concurrency thread-exit M
//       Thread A allocates M buffers (ids 1..M) and exits while thread B is
//       recording M alloc/free pairs (ids 2^40 + i); B's last quarter runs
//       after A is gone; then the main thread frees A's buffers.
//
// Prints "<mode> ok" (fork: "fork child PID") on success.
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "check.h"
#include "memtrack.h"

namespace {

constexpr std::uint64_t kSecondThread = std::uint64_t{1} << 40;
constexpr std::uint64_t kChild = std::uint64_t{1} << 41;

std::uint64_t arg(char** argv, int i) { return std::strtoull(argv[i], nullptr, 10); }

void pairs(std::uint64_t first_id, std::uint64_t count, std::uint32_t device) {
    for (std::uint64_t i = 0; i < count; i++) {
        memtrack_alloc(device, MEMTRACK_KIND_L1, first_id + i, 0x1000 + 64 * (i % 16), 64);
        memtrack_free(device, MEMTRACK_KIND_L1, first_id + i, 0x1000 + 64 * (i % 16), 64);
    }
}

// Spins until `flag` holds `value`: a start line without C++20's barrier.
void wait_for(const std::atomic<std::uint64_t>& flag, std::uint64_t value) {
    while (flag.load(std::memory_order_acquire) < value) {
        std::this_thread::yield();
    }
}

int threads(std::uint64_t n, std::uint64_t m, std::uint64_t base) {
    CHECK(memtrack_enabled() == 1);  // attach before the threads race
    std::atomic<std::uint64_t> ready{0};
    std::atomic<std::uint64_t> go{0};
    std::vector<std::thread> workers;
    for (std::uint64_t t = 0; t < n; t++) {
        workers.emplace_back([&, t] {
            ready.fetch_add(1, std::memory_order_acq_rel);
            wait_for(go, 1);
            pairs(base + (t << 32), m, static_cast<std::uint32_t>(t % 8));
        });
    }
    wait_for(ready, n);
    go.store(1, std::memory_order_release);
    for (auto& w : workers) {
        w.join();
    }
    std::printf("threads ok\n");
    return 0;
}

int fork_mid_run(std::uint64_t m) {
    for (std::uint64_t i = 1; i <= m; i++) {
        memtrack_alloc(0, MEMTRACK_KIND_DRAM, i, 0x10000 * i, 4096);
    }
    std::atomic<std::uint64_t> progress{0};
    std::thread second([&] {
        for (std::uint64_t i = 0; i < m; i++) {
            pairs(kSecondThread + i, 1, 1);
            progress.store(i + 1, std::memory_order_release);
        }
    });
    // Fork while the second thread is writing.
    wait_for(progress, m / 2);
    const pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        // Only this thread exists here; the first event attaches anew
        // under the child's pid. exit() runs memtrack's exit handler.
        pairs(kChild, m, 2);
        std::exit(0);
    }
    second.join();
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (std::uint64_t i = 1; i <= m; i++) {
        memtrack_free(0, MEMTRACK_KIND_DRAM, i, 0x10000 * i, 4096);
    }
    std::printf("fork child %d\n", static_cast<int>(child));
    return 0;
}

int thread_exit(std::uint64_t m) {
    std::atomic<std::uint64_t> progress{0};
    std::atomic<std::uint64_t> a_gone{0};
    // B: the first three quarters overlap A, the last quarter runs after A
    // has exited.
    std::thread b([&] {
        for (std::uint64_t i = 0; i < m; i++) {
            if (i == m - m / 4) {
                wait_for(a_gone, 1);
            }
            pairs(kSecondThread + i, 1, 1);
            progress.store(i + 1, std::memory_order_release);
        }
    });
    std::thread a([&] {
        wait_for(progress, m / 4);
        for (std::uint64_t i = 1; i <= m; i++) {
            memtrack_alloc(3, MEMTRACK_KIND_DRAM, i, 0x100 * i, 256);
        }
    });
    a.join();
    a_gone.store(1, std::memory_order_release);
    b.join();
    // Buffers allocated on a thread that no longer exists are freed here.
    for (std::uint64_t i = 1; i <= m; i++) {
        memtrack_free(3, MEMTRACK_KIND_DRAM, i, 0x100 * i, 256);
    }
    std::printf("thread-exit ok\n");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "threads" && argc == 5) {
        return threads(arg(argv, 2), arg(argv, 3), arg(argv, 4));
    }
    if (mode == "fork" && argc == 3) {
        return fork_mid_run(arg(argv, 2));
    }
    if (mode == "thread-exit" && argc == 3) {
        return thread_exit(arg(argv, 2));
    }
    std::fprintf(stderr, "usage: concurrency threads N M BASE | fork M | thread-exit M\n");
    return 1;
}
