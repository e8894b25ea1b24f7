// scenario.cpp: what tt_metal does with device memory, on the model of
// tt_model.hpp (which runs the patch's hook code), one scenario per fact
// of docs/tt-metal.md. Run under
//   memtrack record -o FILE -- scenario NAME
// and asserted on `memtrack report FILE --json` by cli/tests/scenarios.rs.
//
//   mesh              two mesh buffers, a plain buffer, a program's pool
//   zero-size         0-byte buffers and mesh buffers (fact 1)
//   intercepted       allocations a graph capture intercepts (fact 2)
//   device-gone       frees after the mesh device is destroyed, a chip
//                     closed, programs outliving their chips (fact 3)
//   per-core          per-core mesh buffers: device buffers own memory (fact 4)
//   views             views, slow-dispatch reads, external mesh buffers (fact 5)
//   chip-ids          mesh buffers on submeshes: mesh ids are not chips (fact 6)
//   cb-placement      circular buffers placed, the cached layout on new
//                     chips, a globally allocated one (fact 7)
//   cb-replacement    a resized circular buffer re-placed (fact 8)
//   kernel-binaries   a workload's kernel binaries (fact 9)
//
// The program prints "NAME VALUE" lines (ids, counts) that the test checks.
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "check.h"
#include "tt_model.hpp"

namespace {

using model::BufferType;

constexpr std::uint64_t kLocal = 64 * 1024;
constexpr std::uint64_t kPage = 2048;

void print(const char* name, std::uint64_t value) {
    std::printf("%s %llu\n", name, static_cast<unsigned long long>(value));
}

// Not make_shared: the MeshDevice's memory goes with its last owner even
// while MeshBuffers hold weak references, so a hook that reads a destroyed
// mesh device is a heap-use-after-free under AddressSanitizer.
std::shared_ptr<model::MeshDevice> mesh_over(const model::Cluster& cluster, int first, int count) {
    return std::shared_ptr<model::MeshDevice>(new model::MeshDevice(cluster.range(first, count)));
}

void mesh() {
    model::Cluster cluster(8);
    auto mesh = mesh_over(cluster, 0, 8);
    memtrack_mark("start");
    // Two mesh buffers, one after the other; the second is deallocated
    // explicitly and then again by its destructor.
    for (int k = 0; k < 2; k++) {
        auto m = model::MeshBuffer::create(kLocal, kPage, BufferType::DRAM, mesh);
        print(("mesh " + std::to_string(k)).c_str(), m->get_backing_buffer()->unique_id());
        memtrack_mark(("mesh-" + std::to_string(k) + "-live").c_str());
        if (k == 1) {
            m->deallocate();
        }
    }
    // 4000 bytes in 1000-byte pages: the allocator reserves 4 aligned
    // pages, 4096 bytes (fact 12).
    {
        auto plain = model::Buffer::create(cluster.chips[0].get(), 4000, 1000, BufferType::DRAM);
        print("plain", plain->unique_id());
        memtrack_mark("plain-live");
    }
    // A program's pool, released with the program.
    {
        model::ProgramImpl program;
        program.add_buffer(model::Buffer::create(cluster.chips[0].get(), 2048, kPage, BufferType::L1));
        program.add_buffer(model::Buffer::create(cluster.chips[1].get(), 2048, kPage, BufferType::L1));
        program.add_buffer(model::Buffer::create(cluster.chips[2].get(), 8192, kPage, BufferType::DRAM));
        memtrack_mark("program-live");
    }
    memtrack_mark("end");
}

void zero_size() {
    model::Cluster cluster(8);
    auto mesh = mesh_over(cluster, 0, 8);
    {
        auto empty = model::Buffer::create(cluster.chips[0].get(), 0, kPage, BufferType::DRAM);
        auto empty_mesh = model::MeshBuffer::create(0, kPage, BufferType::L1, mesh);
        auto real = model::Buffer::create(cluster.chips[0].get(), 4096, kPage, BufferType::DRAM);
        CHECK(empty->is_allocated());  // ALLOCATED without an allocation
        print("real", real->unique_id());
        memtrack_mark("live");
        empty_mesh->deallocate();
    }
    memtrack_mark("end");
}

void intercepted() {
    model::Cluster cluster(8);
    auto mesh = mesh_over(cluster, 0, 8);
    auto before = model::Buffer::create(cluster.chips[0].get(), 4096, kPage, BufferType::DRAM);
    print("before", before->unique_id());
    model::GraphTracker::blocking() = true;  // a NO_DISPATCH capture begins
    {
        auto captured = model::Buffer::create(cluster.chips[1].get(), 8192, kPage, BufferType::DRAM);
        auto captured_mesh = model::MeshBuffer::create(kLocal, kPage, BufferType::L1, mesh);
        print("captured-address", captured->address());
        print("captured-mesh-address", captured_mesh->address());
        print("allocator-live", cluster.chips[1]->allocator().live() + mesh->allocator().live());
        memtrack_mark("captured-live");
        before.reset();  // a real buffer freed inside the capture
    }
    model::GraphTracker::blocking() = false;
    memtrack_mark("end");
}

void device_gone() {
    model::Cluster cluster(8);
    // A mesh device destroyed before its mesh buffer: MeshBuffer::deallocate
    // finds it gone and only marks the backing buffer (mesh_buffer.cpp:304).
    auto mesh = mesh_over(cluster, 0, 8);
    auto mesh_buffer = model::MeshBuffer::create(kLocal, kPage, BufferType::DRAM, mesh);
    // A program whose circular buffers are placed on chips that close first.
    auto program = std::make_unique<model::ProgramImpl>();
    program->add_circular_buffer(4096, 2);
    program->allocate_circular_buffers(mesh.get());
    // A buffer on a chip that closes before the buffer is destroyed.
    auto plain = model::Buffer::create(cluster.chips[3].get(), 4096, kPage, BufferType::L1);
    memtrack_mark("live");
    mesh.reset();  // the MeshDevice object is freed
    mesh_buffer.reset();
    for (auto& chip : cluster.chips) {
        chip->close();
    }
    plain.reset();
    program.reset();
    memtrack_mark("end");
}

void per_core() {
    model::Cluster cluster(8);
    auto mesh = mesh_over(cluster, 0, 8);
    auto m = model::MeshBuffer::create(16 * 1024, kPage, BufferType::L1, mesh, std::nullopt, /*per_core=*/true);
    std::size_t live = 0;
    for (auto& chip : cluster.chips) {
        live += chip->allocator().live();
    }
    print("allocator-live-before", live);
    memtrack_mark("per-core-live");
    m->deallocate();
    live = 0;
    for (auto& chip : cluster.chips) {
        live += chip->allocator().live();
    }
    // Reporting must not keep tt_metal from freeing them (fact 4).
    print("allocator-live-after", live);
    memtrack_mark("end");
}

void views() {
    model::Cluster cluster(8);
    auto mesh = mesh_over(cluster, 0, 8);
    auto m = model::MeshBuffer::create(kLocal, kPage, BufferType::DRAM, mesh);
    auto plain = model::Buffer::create(cluster.chips[0].get(), 8192, kPage, BufferType::L1);
    {
        // Slow dispatch: a view of every device buffer on every read and write.
        for (int i = 0; i < 10; i++) {
            model::sd_read_write(*m, model::BufferRegion{kPage, 4 * kPage});
        }
        auto half = plain->view(model::BufferRegion{0, 4096});
        auto whole = plain->view(model::BufferRegion{0, 8192});
        auto external = model::MeshBuffer::create(kLocal, kPage, BufferType::DRAM, mesh, m->address());
        auto at_address = model::Buffer::create(cluster.chips[5].get(), m->address(), kLocal, kPage, BufferType::DRAM);
        memtrack_mark("views-live");
        half->mark_as_deallocated();
        external->deallocate();
    }
    memtrack_mark("owners-live");
    m.reset();
    plain.reset();
    memtrack_mark("end");
}

void chip_ids() {
    model::Cluster cluster(8);
    auto all = mesh_over(cluster, 0, 8);    // mesh id 0
    auto upper = mesh_over(cluster, 4, 4);  // mesh id 1, chips 4..7
    auto right = mesh_over(cluster, 6, 2);  // mesh id 2, chips 6..7
    print("mesh-id-upper", static_cast<std::uint64_t>(upper->id()));
    print("mesh-id-right", static_cast<std::uint64_t>(right->id()));
    {
        auto a = model::MeshBuffer::create(32 * 1024, kPage, BufferType::DRAM, upper);
        auto b = model::MeshBuffer::create(32 * 1024, kPage, BufferType::DRAM, right);
        memtrack_mark("live");
    }
    memtrack_mark("end");
}

void cb_placement() {
    model::Cluster cluster(8);
    auto left = mesh_over(cluster, 0, 4);
    auto all = mesh_over(cluster, 0, 8);
    auto global = model::Buffer::create(cluster.chips[0].get(), 8192, kPage, BufferType::L1);
    {
        model::ProgramImpl program;
        program.add_circular_buffer(4096, 4);
        program.add_circular_buffer(2048, 2);
        program.add_circular_buffer(8192, 4, global.get());
        program.allocate_circular_buffers(left.get());  // a new layout, chips 0..3
        memtrack_mark("left-live");
        program.allocate_circular_buffers(all.get());  // the cached layout, new chips 4..7
        program.allocate_circular_buffers(all.get());  // nothing new
        memtrack_mark("all-live");
    }
    global.reset();
    memtrack_mark("end");
}

void cb_replacement() {
    model::Cluster cluster(8);
    auto mesh = mesh_over(cluster, 0, 8);
    {
        model::ProgramImpl program;
        auto* first = program.add_circular_buffer(4096, 4);
        program.add_circular_buffer(2048, 2);
        program.allocate_circular_buffers(mesh.get());
        memtrack_mark("placed");
        // UpdateCircularBufferTotalSize: the first grows, the second moves.
        program.update_circular_buffer_total_size(first, 8192);
        program.allocate_circular_buffers(mesh.get());
        memtrack_mark("replaced");
    }
    memtrack_mark("end");
}

void kernel_binaries() {
    model::Cluster cluster(8);
    auto mesh = mesh_over(cluster, 0, 8);
    model::ProgramImpl first;
    model::ProgramImpl second;
    first.set_binary_size(3 * kPage);
    second.set_binary_size(5 * kPage);
    {
        model::MeshWorkload workload;
        workload.add_program(&first);
        workload.add_program(&second);
        workload.load_binaries(mesh);
        print("kernel-config-ring", workload.kernel_config_ring_bytes());
        memtrack_mark("binaries-live");
    }
    memtrack_mark("end");
}

struct Named {
    const char* name;
    void (*run)();
};

constexpr Named kScenarios[] = {
    {"mesh", mesh},
    {"zero-size", zero_size},
    {"intercepted", intercepted},
    {"device-gone", device_gone},
    {"per-core", per_core},
    {"views", views},
    {"chip-ids", chip_ids},
    {"cb-placement", cb_placement},
    {"cb-replacement", cb_replacement},
    {"kernel-binaries", kernel_binaries},
};

}  // namespace

int main(int argc, char** argv) {
    // The record must see the hooks: this runs under `memtrack record`.
    CHECK(memtrack_enabled() != 0);
    for (const Named& s : kScenarios) {
        if (argc == 2 && std::strcmp(argv[1], s.name) == 0) {
            s.run();
            return 0;
        }
    }
    std::fprintf(stderr, "usage: scenario NAME (mesh, zero-size, intercepted, device-gone, per-core, views, "
                         "chip-ids, cb-placement, cb-replacement, kernel-binaries)\n");
    return 1;
}
