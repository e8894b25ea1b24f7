// adapter.cpp: include/memtrack.hpp against mock tt_metal classes.
//
// The mocks have the shape of tt_metal's IDevice, Buffer, MeshBuffer,
// CircularBuffer and Program (the accessors the adapter uses, and no more),
// so this proves the adapter compiles without tt_metal's headers. Every
// accessor counts its calls: with tracking off the adapter must not touch
// the objects at all.
//
// Usage: adapter on | off
//   on   MEMTRACK_RING names a fresh ring; tests/ffi.rs asserts the exact
//        records that the hooks below produce.
//   off  MEMTRACK_RING is unset, or the program was built with
//        -DMEMTRACK_DISABLE (then it is not even linked with libmemtrack).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "check.h"
#include "memtrack.hpp"

namespace mock {

int accessor_calls = 0;

enum class BufferType { DRAM, L1, SYSTEM_MEMORY, L1_SMALL, TRACE };

class IDevice {
public:
    virtual ~IDevice() = default;
    virtual int id() const = 0;
};

class Device : public IDevice {
public:
    explicit Device(int id) : id_(id) {}
    int id() const override {
        ++accessor_calls;
        return id_;
    }

private:
    int id_;
};

class Buffer {
public:
    Buffer(IDevice* device, std::uint64_t id, BufferType type, std::uint64_t address, std::uint64_t size)
        : device_(device), id_(id), type_(type), address_(address), size_(size) {}
    IDevice* device() const {
        ++accessor_calls;
        return device_;
    }
    BufferType buffer_type() const { return type_; }
    std::uint64_t unique_id() const { return id_; }
    std::uint64_t address() const { return address_; }
    std::uint64_t size() const { return size_; }

private:
    IDevice* device_;
    std::uint64_t id_;
    BufferType type_;
    std::uint64_t address_;
    std::uint64_t size_;
};

// tt_metal's MaybeRemote<std::shared_ptr<Buffer>>: a device buffer of a
// mesh buffer exists only on the devices local to this host.
class MaybeRemote {
public:
    explicit MaybeRemote(std::shared_ptr<Buffer> b) : buffer_(std::move(b)) {}
    bool is_local() const { return buffer_ != nullptr; }
    const std::shared_ptr<Buffer>& value() const { return buffer_; }

private:
    std::shared_ptr<Buffer> buffer_;
};

// Like tt_metal's MeshBuffer: no unique_id(), a backing buffer.
class MeshBuffer {
public:
    Buffer* get_backing_buffer() const {
        ++accessor_calls;
        return backing_.get();
    }
    std::unique_ptr<Buffer> backing_;
    std::vector<MaybeRemote> buffers_;
};

// A mesh buffer with an id of its own and no backing buffer (externally
// owned memory).
class IdentifiedMeshBuffer {
public:
    std::uint64_t unique_id() const {
        ++accessor_calls;
        return 900;
    }
    std::shared_ptr<Buffer> get_backing_buffer() const { return nullptr; }
    std::vector<std::shared_ptr<Buffer>> buffers_;
};

class CircularBuffer {
public:
    CircularBuffer(std::uintptr_t id, std::uint32_t address, std::uint32_t size, bool global)
        : id_(id), address_(address), size_(size), global_(global) {}
    std::uintptr_t id() const {
        ++accessor_calls;
        return id_;
    }
    std::uint32_t address() const { return address_; }
    std::uint32_t size() const { return size_; }
    bool globally_allocated() const { return global_; }

private:
    std::uintptr_t id_;
    std::uint32_t address_;
    std::uint32_t size_;
    bool global_;
};

class Program {
public:
    // Not counted: links are computed once, when a buffer is created, and
    // kept with it (see memtrack::link), not by the hooks.
    std::uint64_t get_id() const { return 500; }
    std::vector<std::shared_ptr<CircularBuffer>> circular_buffers_;
};

}  // namespace mock

namespace {

using mock::BufferType;

// Each hook site once; tests/ffi.rs lists the records this must produce.
void run_hooks() {
    std::vector<std::unique_ptr<mock::Device>> devices;
    for (int i = 0; i < 8; i++) {
        devices.push_back(std::make_unique<mock::Device>(i));
    }
    mock::Program program;

    // Buffers through a raw pointer, a shared_ptr, a reference; nulls.
    mock::Buffer plain(devices[2].get(), 11, BufferType::L1, 0x1000, 256);
    auto pooled = std::make_shared<mock::Buffer>(devices[1].get(), 12, BufferType::DRAM, 0x2000, 4096);
    mock::Buffer hostless(nullptr, 13, BufferType::DRAM, 0, 64);
    const memtrack::link pool_link = memtrack::owned_by(program);
    memtrack::buffer_allocated(&plain);
    memtrack::buffer_allocated(pooled, pool_link);
    memtrack::buffer_allocated(static_cast<const mock::Buffer*>(nullptr));
    memtrack::buffer_allocated(std::shared_ptr<mock::Buffer>());
    memtrack::buffer_allocated(hostless);

    // A 2x4 mesh buffer: backing buffer on the mesh device (id 0), eight
    // device buffers at its address, and one remote coordinate.
    mock::MeshBuffer mesh;
    mesh.backing_ = std::make_unique<mock::Buffer>(devices[0].get(), 20, BufferType::DRAM, 0x40000, 1024);
    for (int i = 0; i < 8; i++) {
        mesh.buffers_.emplace_back(std::make_shared<mock::Buffer>(devices[static_cast<std::size_t>(i)].get(),
                                                                  21 + static_cast<std::uint64_t>(i),
                                                                  BufferType::DRAM, 0x40000, 1024));
    }
    mesh.buffers_.emplace_back(nullptr);
    auto local = [](const mock::MaybeRemote& b) { return b.is_local() ? b.value().get() : nullptr; };
    memtrack::mesh_buffer_allocated(mesh, mesh.buffers_, local);
    memtrack::mark("mesh-live");
    memtrack::mesh_buffer_deallocated(mesh, mesh.buffers_, local);

    mock::IdentifiedMeshBuffer identified;
    identified.buffers_.push_back(std::make_shared<mock::Buffer>(devices[4].get(), 31, BufferType::L1, 0x800, 32));
    identified.buffers_.push_back(std::make_shared<mock::Buffer>(devices[5].get(), 32, BufferType::L1, 0x800, 32));
    memtrack::mesh_buffer_allocated(&identified, identified.buffers_);
    memtrack::mesh_buffer_deallocated(&identified, identified.buffers_);

    // A program's circular buffers and a kernel on device 3.
    program.circular_buffers_.push_back(std::make_shared<mock::CircularBuffer>(0xC0, 0x10000, 2048, false));
    program.circular_buffers_.push_back(std::make_shared<mock::CircularBuffer>(0xC1, 0x20000, 512, true));
    const mock::IDevice* device3 = devices[3].get();
    for (const auto& cb : program.circular_buffers_) {
        memtrack::circular_buffer_allocated(program, device3, cb);
    }
    memtrack::kernel_loaded(&program, device3, 77, 0x8000, 1024);
    memtrack::kernel_unloaded(&program, device3, 77, 0x8000, 1024);
    for (const auto& cb : program.circular_buffers_) {
        memtrack::circular_buffer_deallocated(program, *device3, *cb);
    }

    memtrack::buffer_deallocated(pooled, pool_link);
    memtrack::buffer_deallocated(plain);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2 || (std::strcmp(argv[1], "on") != 0 && std::strcmp(argv[1], "off") != 0)) {
        std::fprintf(stderr, "usage: adapter on | off\n");
        return 1;
    }
    const bool on = std::strcmp(argv[1], "on") == 0;
    CHECK(memtrack::enabled() == on);
    // Identity helpers are plain functions of the objects, on or off.
    mock::MeshBuffer empty;
    CHECK(memtrack::mesh_buffer_id(empty) == 0);
    CHECK(memtrack::alias(5).parent_id == 5 && memtrack::alias().flags == MEMTRACK_FLAG_ALIAS);
    mock::accessor_calls = 0;

    run_hooks();

    // Off, the hooks never looked at the objects.
    CHECK(on ? mock::accessor_calls > 0 : mock::accessor_calls == 0);
    std::printf("adapter %s ok\n", argv[1]);
    return 0;
}
