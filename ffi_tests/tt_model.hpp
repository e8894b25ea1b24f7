// tt_model.hpp: a small C++ model of the tt_metal objects whose lifecycle
// memtrack reports, with the hooks placed where docs/tt-metal.md puts them.
//
//   Buffer      allocation status, owns_data_, allocate/deallocate,
//               mark_as_deallocated, and buffers created at an address
//               (views of memory that another object owns)
//   MeshBuffer  one backing buffer on the mesh device plus one device
//               buffer per device at the same address (2x4 mesh: 8)
//   Program     a pool of buffers kept alive for the program, circular
//               buffers allocated per device, kernels loaded per device;
//               all released in ~Program
//
// The historical tracking bugs are switches in `tracking` (scenario.cpp
// sets them), so one model reproduces the fix and each failed attempt.
#ifndef MEMTRACK_FFI_TESTS_TT_MODEL_HPP
#define MEMTRACK_FFI_TESTS_TT_MODEL_HPP

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "memtrack.hpp"

namespace model {

/// Which version of tt_metal's deallocation tracking is compiled in.
struct Tracking {
    /// mark_as_deallocated reports every buffer, views included. The first
    /// failed attempt reported only buffers with owns_data_.
    bool free_views = true;
    /// mark_as_deallocated does nothing for a buffer already deallocated.
    bool guard = true;
    /// ~Program releases the program's buffer pool.
    bool release_pool = true;
};
inline Tracking tracking;

enum class BufferType : std::uint8_t { DRAM, L1, SYSTEM_MEMORY, L1_SMALL, TRACE };
enum class AllocationStatus { ALLOCATED, DEALLOCATED };

/// Hands out addresses; freed ranges of the same size are reused first,
/// as a real allocator does (so an address never identifies a buffer).
class Allocator {
public:
    std::uint64_t allocate(BufferType type, std::uint64_t size) {
        auto& bank = banks_[type];
        auto reuse = bank.freed.find(size);
        if (reuse != bank.freed.end()) {
            const std::uint64_t address = reuse->second;
            bank.freed.erase(reuse);
            return address;
        }
        const std::uint64_t address = bank.next;
        bank.next += size;
        return address;
    }
    void deallocate(BufferType type, std::uint64_t address, std::uint64_t size) {
        banks_[type].freed.emplace(size, address);
    }

private:
    struct Bank {
        std::uint64_t next = 0x10000;
        std::multimap<std::uint64_t, std::uint64_t> freed;  // size -> address
    };
    std::map<BufferType, Bank> banks_;
};

class IDevice {
public:
    virtual ~IDevice() = default;
    virtual int id() const = 0;
    Allocator& allocator() { return allocator_; }

private:
    Allocator allocator_;
};

class Device : public IDevice {
public:
    explicit Device(int id) : id_(id) {}
    int id() const override { return id_; }

private:
    int id_;
};

/// A rows x cols mesh. Its own allocator hands out the lock-step address
/// that every device buffer of a mesh buffer shares. Reports as device 0,
/// the reference device.
class MeshDevice : public IDevice {
public:
    MeshDevice(int rows, int cols) {
        for (int i = 0; i < rows * cols; i++) {
            devices_.push_back(std::make_unique<Device>(i));
        }
    }
    int id() const override { return 0; }
    std::vector<IDevice*> devices() const {
        std::vector<IDevice*> out;
        for (const auto& d : devices_) {
            out.push_back(d.get());
        }
        return out;
    }

private:
    std::vector<std::unique_ptr<Device>> devices_;
};

class Buffer {
public:
    /// A buffer that owns its memory (tt_metal: Buffer::create without an
    /// address). `link` says how memtrack relates it to other buffers.
    static std::shared_ptr<Buffer> create(IDevice* device, std::uint64_t size, BufferType type,
                                          memtrack::link link = memtrack::standalone) {
        std::shared_ptr<Buffer> b(new Buffer(device, size, type, true, link));
        b->allocate_impl();
        return b;
    }

    /// A buffer at an address whose memory something else owns (tt_metal:
    /// Buffer::create with an address; owns_data_ is false).
    static std::shared_ptr<Buffer> create_at(IDevice* device, std::uint64_t address, std::uint64_t size,
                                             BufferType type, memtrack::link link) {
        std::shared_ptr<Buffer> b(new Buffer(device, size, type, false, link));
        b->address_ = address;
        b->status_ = AllocationStatus::ALLOCATED;
        memtrack::buffer_allocated(*b, b->link_);
        return b;
    }

    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    ~Buffer() {
        if (owns_data_) {
            deallocate_impl();
        } else if (status_ == AllocationStatus::ALLOCATED) {
            mark_as_deallocated();
        }
    }

    /// Frees the memory of a buffer that owns it; a view has none to free.
    void deallocate() {
        if (!owns_data_) {
            return;
        }
        deallocate_impl();
    }

    /// The buffer's memory is gone (freed by its owner, or the allocator
    /// was reset): only the status changes, and memtrack hears of it.
    void mark_as_deallocated() {
        if (tracking.guard && status_ == AllocationStatus::DEALLOCATED) {
            return;
        }
        if (owns_data_ || tracking.free_views) {
            memtrack::buffer_deallocated(*this, link_);
        }
        status_ = AllocationStatus::DEALLOCATED;
    }

    IDevice* device() const { return device_; }
    BufferType buffer_type() const { return type_; }
    std::uint64_t unique_id() const { return id_; }
    std::uint64_t address() const { return address_; }
    std::uint64_t size() const { return size_; }
    bool is_allocated() const { return status_ == AllocationStatus::ALLOCATED; }

private:
    Buffer(IDevice* device, std::uint64_t size, BufferType type, bool owns_data, memtrack::link link)
        : device_(device), id_(next_id()), size_(size), type_(type), owns_data_(owns_data), link_(link) {}

    static std::uint64_t next_id() {
        static std::uint64_t next = 1;
        return next++;
    }

    void allocate_impl() {
        address_ = device_->allocator().allocate(type_, size_);
        status_ = AllocationStatus::ALLOCATED;
        memtrack::buffer_allocated(*this, link_);
    }

    void deallocate_impl() {
        if (status_ != AllocationStatus::ALLOCATED) {
            return;
        }
        memtrack::buffer_deallocated(*this, link_);
        device_->allocator().deallocate(type_, address_, size_);
        status_ = AllocationStatus::DEALLOCATED;
    }

    IDevice* device_;
    std::uint64_t id_;
    std::uint64_t address_ = 0;
    std::uint64_t size_;
    BufferType type_;
    bool owns_data_;
    AllocationStatus status_ = AllocationStatus::DEALLOCATED;
    // Kept for the buffer's life: the free must carry the allocation's flags.
    memtrack::link link_;
};

/// One backing buffer on the mesh device (it owns the memory: ALIAS, since
/// the device buffers count the bytes) and one device buffer per device at
/// the backing buffer's address (parent: the mesh buffer).
class MeshBuffer {
public:
    static std::shared_ptr<MeshBuffer> create(MeshDevice* mesh, std::uint64_t device_local_size,
                                              BufferType type) {
        std::shared_ptr<MeshBuffer> m(new MeshBuffer());
        m->backing_ = Buffer::create(mesh, device_local_size, type, memtrack::alias());
        const memtrack::link device_link{memtrack::mesh_buffer_id(*m), 0};
        for (IDevice* device : mesh->devices()) {
            m->buffers_.push_back(
                Buffer::create_at(device, m->backing_->address(), device_local_size, type, device_link));
        }
        return m;
    }

    ~MeshBuffer() { deallocate(); }

    /// Backing buffer first (its memory goes back to the allocator), then
    /// every device buffer. Idempotent, as ~MeshBuffer calls it too.
    void deallocate() {
        if (!backing_) {
            return;
        }
        backing_->deallocate();
        for (const auto& b : buffers_) {
            b->mark_as_deallocated();
        }
        backing_.reset();
    }

    Buffer* get_backing_buffer() const { return backing_.get(); }
    const std::vector<std::shared_ptr<Buffer>>& device_buffers() const { return buffers_; }

private:
    MeshBuffer() = default;
    std::shared_ptr<Buffer> backing_;
    std::vector<std::shared_ptr<Buffer>> buffers_;
};

/// As tt_metal's: its id is its address, its address is set when its
/// program allocates it.
class CircularBuffer {
public:
    explicit CircularBuffer(std::uint64_t size) : size_(size) {}
    std::uintptr_t id() const { return reinterpret_cast<std::uintptr_t>(this); }
    std::uint64_t address() const { return address_; }
    std::uint64_t size() const { return size_; }
    bool globally_allocated() const { return false; }
    void set_locally_allocated_address(std::uint64_t a) { address_ = a; }

private:
    std::uint64_t size_;
    std::uint64_t address_ = 0;
};

struct Kernel {
    std::uint64_t binary_size;
    std::uint64_t address = 0;
};

class Program {
public:
    Program() : id_(next_id()), pool_(std::make_unique<std::vector<std::shared_ptr<Buffer>>>()) {}
    Program(const Program&) = delete;
    Program& operator=(const Program&) = delete;

    ~Program() {
        // Circular buffers and kernels live as long as the program, on
        // every device it was set up on.
        for (IDevice* device : devices_) {
            for (const auto& cb : circular_buffers_) {
                memtrack::circular_buffer_deallocated(*this, device, *cb);
            }
            for (const auto& k : kernels_) {
                memtrack::kernel_unloaded(*this, device, kernel_id(*k), k->address, k->binary_size);
            }
        }
        if (tracking.release_pool) {
            release_buffers();
        } else {
            // The bug: the pool is never released. Its buffers stay
            // referenced (in tt_metal, until the process exits) and are
            // never deallocated.
            static_cast<void>(pool_.release());
        }
    }

    std::uint64_t get_id() const { return id_; }

    /// A buffer the program keeps alive while it exists (its pool).
    Buffer& add_pool_buffer(IDevice* device, std::uint64_t size, BufferType type) {
        pool_->push_back(Buffer::create(device, size, type, memtrack::owned_by(*this)));
        return *pool_->back();
    }

    void release_buffers() { pool_->clear(); }

    void add_circular_buffer(std::uint64_t size) {
        circular_buffers_.push_back(std::make_unique<CircularBuffer>(size));
    }

    void add_kernel(std::uint64_t binary_size) { kernels_.push_back(std::make_unique<Kernel>(Kernel{binary_size})); }

    /// Program::allocate_circular_buffers(device) and the kernel binaries'
    /// load, for one device.
    void set_up_on(IDevice* device) {
        std::uint64_t address = 0x8000;
        for (const auto& cb : circular_buffers_) {
            cb->set_locally_allocated_address(address);
            address += cb->size();
            memtrack::circular_buffer_allocated(*this, device, *cb);
        }
        for (const auto& k : kernels_) {
            k->address = address;
            address += k->binary_size;
            memtrack::kernel_loaded(*this, device, kernel_id(*k), k->address, k->binary_size);
        }
        devices_.push_back(device);
    }

private:
    static std::uint64_t next_id() {
        static std::uint64_t next = 1000;
        return next++;
    }
    static std::uint64_t kernel_id(const Kernel& k) { return reinterpret_cast<std::uintptr_t>(&k); }

    std::uint64_t id_;
    std::unique_ptr<std::vector<std::shared_ptr<Buffer>>> pool_;
    std::vector<std::unique_ptr<CircularBuffer>> circular_buffers_;
    std::vector<std::unique_ptr<Kernel>> kernels_;
    std::vector<IDevice*> devices_;
};

/// ttnn's view of a buffer: deallocating a tensor marks its buffer
/// deallocated. Two tensors may share one buffer.
struct Tensor {
    std::shared_ptr<Buffer> buffer;
    void deallocate() { buffer->mark_as_deallocated(); }
};

}  // namespace model

#endif  // MEMTRACK_FFI_TESTS_TT_MODEL_HPP
