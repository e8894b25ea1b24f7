// A C++ client of an installed libmemtrack, built by CMakeLists.txt beside
// it through find_package(memtrack). It records a known workload into the
// ring named by argv[1] on device argv[2]; scripts/test-install.sh then reads
// the ring with `memtrack status` and checks every byte of it:
//
//   device D, DRAM: 8192 live bytes, 3 live buffers (one an ALIAS of 0 bytes)
//   device D, L1:   1000 live bytes, 1 live buffer
//   capacity of (D, DRAM): 1 GiB; the process exited cleanly.
//
// Exit status 0 only if every call returned what the header promises.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <memtrack.h>
#if __has_include(<memtrack.hpp>)
#include <memtrack.hpp>  // installed beside memtrack.h: must compile with -Werror too
#endif

namespace {

int failures = 0;

void check(bool ok, const char* what) {
    if (!ok) {
        std::fprintf(stderr, "memtrack_client: FAILED: %s\n", what);
        ++failures;
    }
}

memtrack_buffer buffer(std::uint64_t id, std::uint64_t size, std::uint32_t device, std::uint8_t kind,
                       std::uint8_t flags = 0) {
    memtrack_buffer b{};
    b.buffer_id = id;
    b.parent_id = 0;
    b.address = 0x10000 * id;
    b.size = size;
    b.device_id = device;
    b.kind = kind;
    b.flags = flags;
    return b;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s RING DEVICE\n", argv[0]);
        return 2;
    }
    const char* ring = argv[1];
    const auto device = static_cast<std::uint32_t>(std::strtoul(argv[2], nullptr, 10));

    if (std::getenv("MEMTRACK_RING") == nullptr) {
        check(memtrack_enabled() == 0, "tracking is off until memtrack_init or MEMTRACK_RING");
    }
    int rc = memtrack_init(ring);
    if (rc != MEMTRACK_OK) {
        std::fprintf(stderr, "memtrack_client: memtrack_init(%s) = %d (%s)\n", ring, rc, memtrack_strerror(rc));
        return 1;
    }
    check(memtrack_enabled() == 1, "memtrack_enabled() == 1 after memtrack_init");
    check(memtrack_init(ring) == MEMTRACK_OK, "memtrack_init is idempotent");
    check(std::strlen(memtrack_strerror(MEMTRACK_ERR_NO_SPACE)) > 0, "memtrack_strerror describes a code");

    memtrack_set_capacity(device, MEMTRACK_KIND_DRAM, std::uint64_t{1} << 30);
    memtrack_mark("cmake-client");

    // Three 4 KiB DRAM buffers, short form; the second one is freed again.
    std::vector<memtrack_buffer> dram;
    for (std::uint64_t id = 1; id <= 3; ++id) {
        dram.push_back(buffer(id, 4096, device, MEMTRACK_KIND_DRAM));
        memtrack_alloc(device, MEMTRACK_KIND_DRAM, id, dram.back().address, 4096);
    }
    memtrack_free(device, MEMTRACK_KIND_DRAM, 2, dram[1].address, 4096);
    // Full form: an L1 buffer and an ALIAS (counted as a buffer, not in bytes).
    const memtrack_buffer l1 = buffer(10, 1000, device, MEMTRACK_KIND_L1);
    memtrack_alloc_buffer(&l1);
    const memtrack_buffer alias = buffer(11, 4096, device, MEMTRACK_KIND_DRAM, MEMTRACK_FLAG_ALIAS);
    memtrack_alloc_buffer(&alias);
    memtrack_alloc_buffer(nullptr);  // a no-op, never a crash
    memtrack_free_buffer(nullptr);

    memtrack_shutdown();
    check(memtrack_enabled() == 0, "memtrack_enabled() == 0 after memtrack_shutdown");
    check(memtrack_init(ring) == MEMTRACK_ERR_SHUTDOWN, "memtrack_init after shutdown is MEMTRACK_ERR_SHUTDOWN");
    if (failures != 0) return 1;
    std::printf("memtrack_client: recorded into %s on device %u\n", ring, static_cast<unsigned>(device));
    return 0;
}
