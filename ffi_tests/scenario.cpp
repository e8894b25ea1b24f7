// scenario.cpp: the buffer-lifecycle scenarios that motivated memtrack,
// on the tt_metal model of tt_model.hpp. Run under
//   memtrack record -o FILE -- scenario N
// and asserted on `memtrack report FILE --json` by cli/tests/scenarios.rs.
//
//   1  the fix: every buffer's deallocation tracked (views included), a
//      guard in mark_as_deallocated, the pool released in ~Program
//   2  the first failed attempt: deallocation tracked only with owns_data_
//   3  no guard in mark_as_deallocated
//   4  ~Program does not release its buffer pool
//   5  circular buffers and kernels of two programs on all 8 devices
//
// Scenarios 1-4 run the same workload; only model::tracking differs. The
// program prints the ids the report must mention ("mesh K ID", "tensor
// ID", "program ID") on stdout.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "check.h"
#include "tt_model.hpp"

namespace {

using model::BufferType;

constexpr std::uint64_t kDeviceLocalSize = 64 * 1024;

void workload() {
    model::MeshDevice mesh(2, 4);
    const auto devices = mesh.devices();
    memtrack::mark("start");

    // Two mesh buffers, one after the other; the second is deallocated
    // explicitly and then again by its destructor.
    for (int k = 0; k < 2; k++) {
        auto m = model::MeshBuffer::create(&mesh, kDeviceLocalSize, BufferType::DRAM);
        std::printf("mesh %d %llu\n", k, static_cast<unsigned long long>(memtrack::mesh_buffer_id(*m)));
        memtrack::mark(("mesh-" + std::to_string(k) + "-live").c_str());
        if (k == 1) {
            m->deallocate();
        }
    }

    // A tensor and a view of it share one buffer; both are deallocated.
    {
        auto shared = model::Buffer::create(devices[0], 4096, BufferType::DRAM);
        std::printf("tensor %llu\n", static_cast<unsigned long long>(shared->unique_id()));
        model::Tensor tensor{shared};
        model::Tensor view{shared};
        tensor.deallocate();
        view.deallocate();
    }

    // A program keeping three buffers in its pool.
    {
        model::Program program;
        program.add_pool_buffer(devices[0], 2048, BufferType::L1);
        program.add_pool_buffer(devices[1], 2048, BufferType::L1);
        program.add_pool_buffer(devices[2], 8192, BufferType::DRAM);
        std::printf("program %llu\n", static_cast<unsigned long long>(program.get_id()));
        memtrack::mark("program-live");
    }
    memtrack::mark("end");
}

// Two programs, each with three circular buffers (4 KiB, 2 KiB, 1 KiB) and
// one 1 KiB kernel, set up on all 8 devices of a 2x4 mesh.
void circular_buffers() {
    model::MeshDevice mesh(2, 4);
    {
        model::Program first;
        model::Program second;
        for (model::Program* p : {&first, &second}) {
            p->add_circular_buffer(4096);
            p->add_circular_buffer(2048);
            p->add_circular_buffer(1024);
            p->add_kernel(1024);
            for (model::IDevice* d : mesh.devices()) {
                p->set_up_on(d);
            }
            std::printf("program %llu\n", static_cast<unsigned long long>(p->get_id()));
        }
        memtrack::mark("programs-live");
    }
    memtrack::mark("end");
}

}  // namespace

int main(int argc, char** argv) {
    const int n = argc == 2 ? std::atoi(argv[1]) : 0;
    // The record must see the hooks: this runs under `memtrack record`.
    CHECK(memtrack::enabled());
    switch (n) {
        case 1:
            break;
        case 2:
            model::tracking.free_views = false;
            break;
        case 3:
            model::tracking.guard = false;
            break;
        case 4:
            model::tracking.release_pool = false;
            break;
        case 5:
            circular_buffers();
            return 0;
        default:
            std::fprintf(stderr, "usage: scenario 1..5\n");
            return 1;
    }
    workload();
    return 0;
}
