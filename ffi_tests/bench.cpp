// The hook cost a tt_metal user sees: memtrack_alloc/memtrack_free called
// through the C ABI from C++ threads, next to a call of an empty C function
// exported from another shared library, in the same process and run. Tracking is on when MEMTRACK_RING
// is set (run it under `memtrack record -- bench`), off otherwise.
//
// Prints one JSON line: medians over rounds of ns per event per thread
// (the slowest thread's time over its events).
//
// usage: bench [--threads N] [--events N] [--rounds R]

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "memtrack.h"

// An empty function exported from its own shared library (bench_empty.c):
// the same kind of call as one into libmemtrack.
extern "C" void bench_empty_hook(uint32_t, uint8_t, uint64_t, uint64_t, uint64_t);

using Hook = void (*)(uint32_t, uint8_t, uint64_t, uint64_t, uint64_t);

namespace {

struct Options {
    unsigned threads = 1;
    uint64_t events = 2000000;
    unsigned rounds = 5;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char* flag = argv[i];
        uint64_t value = std::strtoull(argv[i + 1], nullptr, 10);
        if (std::strcmp(flag, "--threads") == 0) {
            o.threads = static_cast<unsigned>(value);
        } else if (std::strcmp(flag, "--events") == 0) {
            o.events = value;
        } else if (std::strcmp(flag, "--rounds") == 0) {
            o.rounds = static_cast<unsigned>(value);
        } else {
            std::fprintf(stderr, "bench: unknown flag %s\n", flag);
            std::exit(2);
        }
    }
    if (o.threads == 0 || o.events < 2 || o.rounds == 0) {
        std::fprintf(stderr, "bench: --threads, --events and --rounds must be positive\n");
        std::exit(2);
    }
    return o;
}

// The hooks go through volatile pointers, as calls into a shared library
// the compiler cannot see into.
Hook volatile alloc_hook = memtrack_alloc;
Hook volatile free_hook = memtrack_free;
Hook volatile empty_hook = bench_empty_hook;

// ns per event per thread for one round of alloc/free pairs.
double round_ns(Hook alloc, Hook free, const Options& o) {
    std::atomic<unsigned> ready{0};
    std::atomic<bool> go{false};
    std::vector<double> elapsed(o.threads);
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < o.threads; ++t) {
        threads.emplace_back([&, t] {
            ready.fetch_add(1);
            while (!go.load(std::memory_order_acquire)) {
            }
            auto start = std::chrono::steady_clock::now();
            for (uint64_t i = 0; i < o.events / 2; ++i) {
                uint64_t id = (static_cast<uint64_t>(t) << 40) | i;
                alloc(t, MEMTRACK_KIND_DRAM, id, 0x1000, 4096);
                free(t, MEMTRACK_KIND_DRAM, id, 0x1000, 4096);
            }
            std::chrono::duration<double, std::nano> d = std::chrono::steady_clock::now() - start;
            elapsed[t] = d.count();
        });
    }
    while (ready.load() != o.threads) {
    }
    go.store(true, std::memory_order_release);
    for (auto& th : threads) {
        th.join();
    }
    return *std::max_element(elapsed.begin(), elapsed.end()) / static_cast<double>(o.events / 2 * 2);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

std::string list(const std::vector<double>& v) {
    std::string s;
    char buf[32];
    for (size_t i = 0; i < v.size(); ++i) {
        std::snprintf(buf, sizeof buf, "%s%.2f", i ? "," : "", v[i]);
        s += buf;
    }
    return s;
}

}  // namespace

int main(int argc, char** argv) {
    Options o = parse(argc, argv);
    // With MEMTRACK_RING set, attach before timing, as a runtime does at
    // its first allocation. (memtrack_init(NULL) without it would create
    // the ring "default": tracking on, with no reader.)
    if (std::getenv("MEMTRACK_RING") != nullptr) {
        int init = memtrack_init(nullptr);
        if (init != MEMTRACK_OK) {
            std::fprintf(stderr, "bench: memtrack_init: %s\n", memtrack_strerror(init));
            return 1;
        }
    }
    std::vector<double> empty, hook;
    // Interleaved rounds: both rows see the same machine conditions.
    for (unsigned r = 0; r < o.rounds; ++r) {
        empty.push_back(round_ns(empty_hook, empty_hook, o));
        hook.push_back(round_ns(alloc_hook, free_hook, o));
    }
    std::printf(
        "{\"schema\":\"memtrack.cxxbench/1\",\"enabled\":%s,\"threads\":%u,\"events\":%llu,\"rounds\":%u,"
        "\"empty_call_ns\":%.2f,\"hook_ns\":%.2f,\"empty_call_rounds\":[%s],\"hook_rounds\":[%s]}\n",
        memtrack_enabled() ? "true" : "false", o.threads, static_cast<unsigned long long>(o.events), o.rounds,
        median(empty), median(hook), list(empty).c_str(), list(hook).c_str());
    return 0;
}
