// tt_model.hpp: a small C++ model of the tt_metal code that memtrack's
// patch hooks (integrations/tt-metal/memtrack.patch, tt-metal 622c6fb9),
// running the patch's own hook code: include/memtrack_tt_metal.hpp, called
// where the patch calls it. Each class follows the real one where it
// decides what memory exists; "real:" comments name the code it follows.
//
//   Allocator     an allocator per device; counts its live allocations
//   Device        a chip: id() is its chip id; close() drops its allocator
//   MeshDevice    id() is a process-wide mesh counter, build_id() the
//                 reference chip; its own (lockstep) allocator
//   GraphTracker  a thread-local hook that can intercept allocations
//   Buffer        create (0 bytes: no allocation), create at an address
//                 (owns no memory), view, allocate_impl, deallocate_impl,
//                 mark_as_deallocated, ~Buffer
//   MeshBuffer    backing buffer + device buffers at its address; per-core
//                 (device buffers own memory); at an address (external);
//                 deallocate() with the mesh device alive or gone
//   sd_read       slow dispatch: a view per device buffer per read/write
//   ProgramImpl   circular buffers placed per chip (layout and cached
//                 branches), resized, released in ~ProgramImpl; a buffer
//                 pool released with the program
//   MeshWorkload  kernel binaries: a DRAM MeshBuffer plus views; L1 kernel
//                 binaries go to the reserved kernel-config ring
#ifndef MEMTRACK_FFI_TESTS_TT_MODEL_HPP
#define MEMTRACK_FFI_TESTS_TT_MODEL_HPP

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <unordered_set>
#include <vector>

#include "memtrack_tt_metal.hpp"

namespace model {

enum class BufferType : std::uint8_t { DRAM, L1, SYSTEM_MEMORY, L1_SMALL, TRACE };
constexpr BufferType kAllocatorTypes[] = {BufferType::DRAM, BufferType::L1, BufferType::L1_SMALL};

constexpr std::uint64_t align(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }

/// Hands out addresses from banks; freed ranges of the same size are
/// reused first (so an address never identifies a buffer). Counts what is
/// live, so a scenario can check that memory really went back.
class Allocator {
public:
    static constexpr std::uint64_t kAlignment = 32;

    std::uint64_t allocate(BufferType type, std::uint64_t size) {
        auto& bank = banks_[type];
        std::uint64_t address;
        auto reuse = bank.freed.find(size);
        if (reuse != bank.freed.end()) {
            address = reuse->second;
            bank.freed.erase(reuse);
        } else {
            address = bank.next;
            bank.next += size;
        }
        bank.live.emplace(address, size);
        return address;
    }
    void deallocate(BufferType type, std::uint64_t address) {
        auto& bank = banks_[type];
        auto it = bank.live.find(address);
        if (it == bank.live.end()) {
            throw std::logic_error("deallocating an address that is not allocated");
        }
        bank.freed.emplace(it->second, address);
        bank.live.erase(it);
    }
    /// Live allocations of every type.
    std::size_t live() const {
        std::size_t n = 0;
        for (const auto& [type, bank] : banks_) {
            n += bank.live.size();
        }
        return n;
    }
    // real: AllocatorImpl::get_num_banks, get_statistics(t).total_allocatable_size_bytes
    std::uint32_t num_banks(BufferType type) const { return type == BufferType::DRAM ? 12 : 64; }
    std::uint64_t bank_size(BufferType type) const {
        return type == BufferType::DRAM ? (std::uint64_t{1} << 30) : type == BufferType::L1 ? 1 << 20 : 32 << 10;
    }

private:
    struct Bank {
        std::uint64_t next = 0x10000;
        std::multimap<std::uint64_t, std::uint64_t> freed;  // size -> address
        std::map<std::uint64_t, std::uint64_t> live;        // address -> size
    };
    std::map<BufferType, Bank> banks_;
};

class IDevice {
public:
    virtual ~IDevice() = default;
    virtual int id() const = 0;
    virtual int build_id() const = 0;
    virtual bool is_initialized() const = 0;
    virtual Allocator& allocator() = 0;
};

/// A chip. real: Device; initialize() creates the allocator and reports
/// its capacities (the patch's memtrack_hooks::chip_capacities), close()
/// drops it.
class Device final : public IDevice {
public:
    explicit Device(int id) : id_(id) {}
    int id() const override { return id_; }
    int build_id() const override { return id_; }
    bool is_initialized() const override { return allocator_ != nullptr; }
    Allocator& allocator() override { return *allocator_; }

    void initialize() {
        allocator_ = std::make_unique<Allocator>();
        for (BufferType type : kAllocatorTypes) {
            memtrack::tt_metal::chip_capacity(static_cast<std::uint32_t>(id_), static_cast<std::uint8_t>(type),
                                              allocator_->bank_size(type) * allocator_->num_banks(type));
        }
    }
    void close() { allocator_.reset(); }

private:
    int id_;
    std::unique_ptr<Allocator> allocator_;
};

/// Chips 0..n-1, open; they outlive every mesh over them (real: the device
/// manager owns the chips).
struct Cluster {
    explicit Cluster(int n) {
        for (int i = 0; i < n; i++) {
            chips.push_back(std::make_unique<Device>(i));
            chips.back()->initialize();
        }
    }
    std::vector<IDevice*> range(int first, int count) const {
        std::vector<IDevice*> out;
        for (int i = first; i < first + count; i++) {
            out.push_back(chips[static_cast<std::size_t>(i)].get());
        }
        return out;
    }
    std::vector<std::unique_ptr<Device>> chips;
};

/// A mesh over some chips. real: id() is generate_unique_mesh_id(), a
/// process-wide counter from 0 (mesh_device.cpp:92) -- not a chip id;
/// build_id() is the reference chip's id.
class MeshDevice final : public IDevice {
public:
    explicit MeshDevice(std::vector<IDevice*> chips) : id_(next_id()), chips_(std::move(chips)) {}
    int id() const override { return id_; }
    int build_id() const override { return chips_.at(0)->id(); }
    bool is_initialized() const override { return true; }
    Allocator& allocator() override { return allocator_; }
    const std::vector<IDevice*>& get_devices() const { return chips_; }

private:
    static int next_id() {
        static std::atomic<int> next{0};
        return next++;
    }
    int id_;
    std::vector<IDevice*> chips_;
    Allocator allocator_;  // lockstep: one address for every chip
};

/// real: GraphTracker::hook_allocate / hook_deallocate, with ttnn's
/// ProcessorHooks (graph capture with NO_DISPATCH): a thread-local hook
/// that, while blocking, intercepts every allocation and deallocation.
struct GraphTracker {
    static bool& blocking() {
        thread_local bool block = false;
        return block;
    }
    static bool hook_allocate() { return blocking(); }
    static bool hook_deallocate() { return blocking(); }
};

struct BufferRegion {
    std::uint64_t offset;
    std::uint64_t size;
};

class Buffer : public std::enable_shared_from_this<Buffer> {
    struct Private {};

public:
    Buffer(IDevice* device, std::uint64_t size, std::uint64_t page_size, BufferType type, bool owns_data, Private)
        : device_(device), size_(size), page_size_(page_size), type_(type), owns_data_(owns_data),
          unique_id_(next_unique_id()) {}
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;

    /// real: buffer.cpp:308. A 0-byte buffer is ALLOCATED without
    /// allocate_impl (buffer.cpp:321).
    static std::shared_ptr<Buffer> create(IDevice* device, std::uint64_t size, std::uint64_t page_size,
                                          BufferType type) {
        auto buffer = std::make_shared<Buffer>(device, size, page_size, type, true, Private{});
        if (buffer->size_ == 0) {
            buffer->status_ = Status::ALLOCATED;
            return buffer;
        }
        buffer->allocate_impl();
        return buffer;
    }

    /// real: buffer.cpp:343. At an address: owns no memory, no allocator.
    static std::shared_ptr<Buffer> create(IDevice* device, std::uint64_t address, std::uint64_t size,
                                          std::uint64_t page_size, BufferType type) {
        auto buffer = std::make_shared<Buffer>(device, size, page_size, type, false, Private{});
        buffer->address_ = address;
        buffer->status_ = Status::ALLOCATED;
        return buffer;
    }

    /// real: buffer.cpp:382. A sub-region is a Buffer at this one's address.
    std::shared_ptr<Buffer> view(const BufferRegion& region) {
        if (region.offset == 0 && region.size == size_) {
            return shared_from_this();
        }
        auto buffer = Buffer::create(device_, address_, region.size, page_size_, type_);
        buffer->root_buffer_ = root_buffer_ ? root_buffer_ : shared_from_this();
        return buffer;
    }

    ~Buffer() {
        if (status_ != Status::DEALLOCATED) {
            deallocate();
        }
    }

    /// real: buffer.cpp:454 plus the patch's hook.
    void mark_as_deallocated() {
        if (status_ == Status::ALLOCATED) {
            memtrack::tt_metal::buffer_deallocated(*this);
        }
        status_ = Status::DEALLOCATED;
    }

    IDevice* device() const { return device_; }
    std::uint64_t size() const { return size_; }
    std::uint64_t address() const { return address_; }
    BufferType buffer_type() const { return type_; }
    std::uint64_t unique_id() const { return unique_id_; }
    bool is_allocated() const { return status_ == Status::ALLOCATED; }
    /// real: num_dev_pages() * aligned_page_size(): what allocate_buffer reserves.
    std::uint64_t aligned_size() const {
        return page_size_ == 0 ? 0 : size_ / page_size_ * align(page_size_, Allocator::kAlignment);
    }

private:
    enum class Status { ALLOCATION_REQUESTED, ALLOCATED, DEALLOCATED };

    static std::uint64_t next_unique_id() {
        static std::atomic<std::uint64_t> next{0};
        return next++;
    }

    /// real: buffer.cpp:418 plus the patch's hook.
    void allocate_impl() {
        if (GraphTracker::hook_allocate()) {
            address_ = 0;
            hooked_allocation_ = true;
        } else {
            address_ = device_->allocator().allocate(type_, aligned_size());
        }
        status_ = Status::ALLOCATED;
        if (!hooked_allocation_) {
            memtrack::tt_metal::buffer_allocated<MeshDevice>(*this);
        }
    }

    void deallocate() {
        if (!owns_data_) {
            return;
        }
        deallocate_impl();
    }

    /// real: buffer.cpp:456 plus the patch's hook, before the device checks.
    void deallocate_impl() {
        if (status_ != Status::ALLOCATED) {
            return;
        }
        memtrack::tt_metal::buffer_deallocated(*this);
        if (device_->is_initialized() && size_ != 0) {
            if (!GraphTracker::hook_deallocate() && !hooked_allocation_) {
                device_->allocator().deallocate(type_, address_);
            }
        }
        status_ = Status::DEALLOCATED;
    }

    IDevice* const device_;
    const std::uint64_t size_;
    const std::uint64_t page_size_;
    const BufferType type_;
    const bool owns_data_;
    const std::uint64_t unique_id_;
    Status status_ = Status::ALLOCATION_REQUESTED;
    bool hooked_allocation_ = false;
    std::uint64_t address_ = 0;
    std::shared_ptr<Buffer> root_buffer_;
};

/// real: mesh_buffer.cpp. One Buffer per chip of the mesh (all local here).
class MeshBuffer {
public:
    /// real: MeshBuffer::create (mesh_buffer.cpp:84), its three branches.
    static std::shared_ptr<MeshBuffer> create(std::uint64_t size, std::uint64_t page_size, BufferType type,
                                              const std::shared_ptr<MeshDevice>& mesh,
                                              std::optional<std::uint64_t> address = std::nullopt,
                                              bool per_core = false) {
        std::shared_ptr<MeshBuffer> m(new MeshBuffer(size, page_size, type, mesh));
        if (per_core) {
            // Each chip allocates its own: device buffers own their memory
            // (mesh_buffer.cpp:110); externally owned, no backing buffer.
            for (IDevice* chip : mesh->get_devices()) {
                m->buffers_.push_back(Buffer::create(chip, size, page_size, type));
            }
            m->state_ = State::EXTERNALLY_OWNED_PER_CORE;
        } else if (!address.has_value()) {
            m->backing_ = Buffer::create(mesh.get(), size, page_size, type);
            m->address_ = m->backing_->address();
            m->state_ = State::OWNED;
            m->initialize_device_buffers();
        } else {
            m->address_ = *address;
            m->state_ = State::EXTERNALLY_OWNED;
            m->initialize_device_buffers();
        }
        return m;
    }

    ~MeshBuffer() { deallocate(); }

    /// real: mesh_buffer.cpp:264. With the mesh device alive the backing
    /// buffer goes with the state (its ~Buffer frees it); per-core device
    /// buffers are dropped, so their own ~Buffer frees them. With the mesh
    /// device gone (mesh_buffer.cpp:304), the backing buffer is only marked.
    void deallocate() {
        if (mesh_device_.lock()) {
            if (state_ == State::EXTERNALLY_OWNED_PER_CORE) {
                buffers_.clear();
            }
            backing_.reset();
            state_ = State::DEALLOCATED;
            return;
        }
        if (state_ == State::OWNED) {
            backing_->mark_as_deallocated();
        }
        backing_.reset();
        state_ = State::DEALLOCATED;
    }

    Buffer* get_backing_buffer() const { return state_ == State::OWNED ? backing_.get() : nullptr; }
    const std::vector<std::shared_ptr<Buffer>>& device_buffers() const { return buffers_; }
    std::uint64_t address() const { return address_; }
    std::uint64_t size() const { return size_; }

private:
    enum class State { OWNED, EXTERNALLY_OWNED, EXTERNALLY_OWNED_PER_CORE, DEALLOCATED };

    MeshBuffer(std::uint64_t size, std::uint64_t page_size, BufferType type, const std::shared_ptr<MeshDevice>& mesh)
        : size_(size), page_size_(page_size), type_(type), mesh_device_(mesh) {}

    /// real: mesh_buffer.cpp:171 plus the patch's hook.
    void initialize_device_buffers() {
        auto mesh = mesh_device_.lock();
        for (IDevice* chip : mesh->get_devices()) {
            buffers_.push_back(Buffer::create(chip, address_, size_, page_size_, type_));
        }
        memtrack::tt_metal::mesh_buffer_allocated(get_backing_buffer(), buffers_,
                                                  [](const std::shared_ptr<Buffer>& b) -> const Buffer* {
                                                      return b.get();
                                                  });
    }

    std::uint64_t size_;
    std::uint64_t page_size_;
    BufferType type_;
    std::weak_ptr<MeshDevice> mesh_device_;
    std::uint64_t address_ = 0;
    std::shared_ptr<Buffer> backing_;
    std::vector<std::shared_ptr<Buffer>> buffers_;
    State state_ = State::DEALLOCATED;
};

/// real: SDMeshCommandQueue read/write (sd_mesh_command_queue.cpp:99):
/// every read and write of a region makes a view of each device buffer.
inline void sd_read_write(const MeshBuffer& mesh_buffer, BufferRegion region) {
    for (const auto& device_buffer : mesh_buffer.device_buffers()) {
        auto shard_view = device_buffer->view(region);
        static_cast<void>(shard_view);
    }
}

struct CoreRangeSet {
    std::uint32_t cores;
    std::uint32_t num_cores() const { return cores; }
};

/// real: CircularBufferImpl. Its id is its address; address() throws
/// until the program placed it (circular_buffer.cpp:167).
class CircularBufferImpl {
public:
    CircularBufferImpl(std::uint32_t size, CoreRangeSet cores, const Buffer* global = nullptr)
        : size_(size), cores_(cores), global_(global) {}
    std::uintptr_t id() const { return reinterpret_cast<std::uintptr_t>(this); }
    const CoreRangeSet& core_ranges() const { return cores_; }
    bool globally_allocated() const { return global_ != nullptr; }
    std::uint32_t size() const { return size_; }
    std::uint32_t address() const {
        if (global_ != nullptr) {
            return static_cast<std::uint32_t>(global_->address());
        }
        if (!local_address_) {
            throw std::logic_error("circular buffer address is not set");
        }
        return *local_address_;
    }
    void set_locally_allocated_address(std::uint32_t a) { local_address_ = a; }
    void set_total_size(std::uint32_t size) { size_ = size; }

private:
    std::uint32_t size_;
    CoreRangeSet cores_;
    const Buffer* global_;
    std::optional<std::uint32_t> local_address_;
};

/// real: detail::ProgramImpl (program.cpp).
class ProgramImpl {
public:
    ProgramImpl() : id_(next_id()) {}
    ProgramImpl(const ProgramImpl&) = delete;
    ProgramImpl& operator=(const ProgramImpl&) = delete;
    /// real: ~ProgramImpl calls deallocate_circular_buffers; the pool (a
    /// plain vector) goes with the program.
    ~ProgramImpl() { deallocate_circular_buffers(); }

    std::uint64_t get_id() const { return id_; }

    /// real: add_circular_buffer_ (program.cpp:1087): a local circular
    /// buffer invalidates the layout; a global one lives in `global`.
    CircularBufferImpl* add_circular_buffer(std::uint32_t size, std::uint32_t cores, const Buffer* global = nullptr) {
        circular_buffers_.push_back(std::make_shared<CircularBufferImpl>(size, CoreRangeSet{cores}, global));
        if (global == nullptr) {
            invalidate_circular_buffer_allocation();
        }
        return circular_buffers_.back().get();
    }

    /// real: UpdateCircularBufferTotalSize (tt_metal.cpp:1525).
    void update_circular_buffer_total_size(CircularBufferImpl* cb, std::uint32_t size) {
        if (!cb->globally_allocated()) {
            invalidate_circular_buffer_allocation();
        }
        cb->set_total_size(size);
    }

    void invalidate_circular_buffer_allocation() { allocation_needed_ = true; }

    /// real: program.cpp:1276 plus the patch's hooks. A MeshDevice is
    /// expanded into its chips; the cached layout is reported for new
    /// chips only; a new layout places every circular buffer, then reports.
    void allocate_circular_buffers(const IDevice* device) {
        std::vector<const IDevice*> devices_to_track;
        if (const auto* mesh = dynamic_cast<const MeshDevice*>(device)) {
            for (IDevice* chip : mesh->get_devices()) {
                devices_to_track.push_back(chip);
            }
        } else {
            devices_to_track.push_back(device);
        }
        std::vector<const IDevice*> new_devices;
        for (const IDevice* d : devices_to_track) {
            if (cb_devices_.insert(d).second) {
                new_devices.push_back(d);
            }
        }
        if (!allocation_needed_) {
            memtrack::tt_metal::circular_buffers_placed(get_id(), circular_buffers_, new_devices);
            return;
        }
        std::uint32_t address = kCircularBufferBase;
        for (const auto& cb : circular_buffers_) {
            if (cb->globally_allocated()) {
                continue;
            }
            cb->set_locally_allocated_address(address);
            address += static_cast<std::uint32_t>(align(cb->size(), Allocator::kAlignment));
        }
        memtrack::tt_metal::circular_buffers_placed(get_id(), circular_buffers_, devices_to_track);
        allocation_needed_ = false;
    }

    /// real: program.cpp:1420 plus the patch's hook (inside the guard).
    void deallocate_circular_buffers() {
        if (!cb_devices_.empty() && !circular_buffers_.empty()) {
            memtrack::tt_metal::circular_buffers_released(get_id());
            cb_devices_.clear();
        }
    }

    /// real: add_buffer / release_buffers: the pool is a plain vector.
    void add_buffer(std::shared_ptr<Buffer> buffer) { owned_buffer_pool_.push_back(std::move(buffer)); }

    /// real: set_kernels_bin_buffer: a view into the workload's DRAM
    /// kernel-binary MeshBuffer.
    void set_kernels_bin_buffer(std::shared_ptr<Buffer> buffer) { kernels_buffer_ = std::move(buffer); }
    std::uint64_t binary_size() const { return binary_size_; }
    void set_binary_size(std::uint64_t n) { binary_size_ = n; }

private:
    static constexpr std::uint32_t kCircularBufferBase = 0x20000;
    static std::uint64_t next_id() {
        static std::atomic<std::uint64_t> next{0};
        return next++;
    }

    std::uint64_t id_;
    std::vector<std::shared_ptr<CircularBufferImpl>> circular_buffers_;
    std::unordered_set<const IDevice*> cb_devices_;
    bool allocation_needed_ = false;
    std::vector<std::shared_ptr<Buffer>> owned_buffer_pool_;
    std::shared_ptr<Buffer> kernels_buffer_;
    std::uint64_t binary_size_ = 0;
};

/// real: MeshWorkloadImpl::load_binaries (mesh_workload.cpp:129). Kernel
/// binaries go to DRAM in one MeshBuffer of the largest program's size;
/// each program writes through a MeshBuffer view at its address and keeps
/// a Buffer view of it. Binaries bound for L1 are copied from there into
/// the reserved KERNEL_CONFIG ring, which no allocator manages.
class MeshWorkload {
public:
    void add_program(ProgramImpl* program) { programs_.push_back(program); }

    void load_binaries(const std::shared_ptr<MeshDevice>& mesh) {
        std::uint64_t max_size = 0;
        for (const ProgramImpl* p : programs_) {
            max_size = std::max(max_size, p->binary_size());
        }
        if (max_size == 0) {
            return;
        }
        kernel_bin_buf_ = MeshBuffer::create(max_size, kProgramPageSize, BufferType::DRAM, mesh);
        for (ProgramImpl* p : programs_) {
            auto view = MeshBuffer::create(p->binary_size(), kProgramPageSize, BufferType::DRAM, mesh,
                                           kernel_bin_buf_->address());
            sd_read_write(*view, BufferRegion{0, p->binary_size()});
            p->set_kernels_bin_buffer(Buffer::create(mesh.get(), kernel_bin_buf_->address(), p->binary_size(),
                                                     kProgramPageSize, BufferType::DRAM));
            kernel_config_ring_bytes_ += p->binary_size();  // L1: the reserved ring
        }
    }

    std::uint64_t kernel_config_ring_bytes() const { return kernel_config_ring_bytes_; }

private:
    static constexpr std::uint64_t kProgramPageSize = 2048;
    std::vector<ProgramImpl*> programs_;
    std::shared_ptr<MeshBuffer> kernel_bin_buf_;
    std::uint64_t kernel_config_ring_bytes_ = 0;
};

}  // namespace model

#endif  // MEMTRACK_FFI_TESTS_TT_MODEL_HPP
