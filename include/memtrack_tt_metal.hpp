/*
 * memtrack_tt_metal.hpp: what tt_metal reports to memtrack, and when.
 *
 * The hook logic of integrations/tt-metal/memtrack.patch. The patch's
 * private header (tt_metal/impl/memory_tracking/memtrack_hooks.hpp) binds
 * these templates to tt_metal's classes; ffi_tests/tt_model.hpp binds them
 * to the model of tt_metal that the scenario tests run. Both run this code,
 * so what the scenarios prove about it holds for the patch.
 *
 * The rules (docs/tt-metal.md says where each hook sits in tt_metal and why):
 *
 *  - Only memory an allocator really handed out is reported: a Buffer in
 *    allocate_impl after allocate_buffer (not when a GraphTracker hook
 *    intercepted the allocation, not a 0-byte buffer, which never reaches
 *    allocate_impl, not a view or any Buffer created at an address).
 *  - Every record sent is kept in a ledger until its free, and the free
 *    is sent from the ledger: same key, same flags, same size and address,
 *    whatever happened to the object since (a circular buffer moved or
 *    resized, a device closed or destroyed). A free without a ledger entry
 *    (memory that was never reported) sends nothing.
 *  - Devices are chips: a record's device_id is a chip id (build_id(); a
 *    MeshDevice's id() is a mesh counter that collides with chip ids).
 *  - A buffer on a MeshDevice (a MeshBuffer's backing buffer) is ALIAS on
 *    the mesh's reference chip; its device buffers, one per local chip at
 *    the same address, carry the bytes and die with it.
 *  - Bytes are the allocator's: Buffer::aligned_size() (what
 *    AllocatorImpl::allocate_buffer reserves), and for a circular buffer
 *    its size times the cores it is placed on.
 *
 * Needs libmemtrack at link time; tt_metal compiles this header in only
 * with -DTT_METAL_MEMTRACK. C++17, no tt_metal header: every function is a
 * template over the tt_metal class it reads, which must offer
 *
 *   Buffer          unique_id(), address(), aligned_size(), buffer_type(),
 *                   device() (a pointer to a Device)
 *   Device          build_id() (the chip id; a MeshDevice's reference chip)
 *   CircularBuffer  id(), address(), size(), globally_allocated(),
 *                   core_ranges().num_cores()
 *
 * Cost with tracking off: one call of memtrack_enabled() per allocation
 * hook, one relaxed load per free hook. With tracking on, a hook also
 * takes one of 16 ledger locks (one per program for circular buffers).
 */
#ifndef MEMTRACK_TT_METAL_HPP
#define MEMTRACK_TT_METAL_HPP

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "memtrack.h"

namespace memtrack::tt_metal {

namespace detail {

/// A memtrack record for one object on one chip.
inline memtrack_buffer record(std::uint64_t buffer_id, std::uint64_t parent_id, std::uint64_t address,
                              std::uint64_t size, std::uint32_t chip, std::uint8_t kind, std::uint8_t flags) noexcept {
    memtrack_buffer r{};
    r.buffer_id = buffer_id;
    r.parent_id = parent_id;
    r.address = address;
    r.size = size;
    r.device_id = chip;
    r.kind = kind;
    r.flags = flags;
    return r;
}

inline bool same_record(const memtrack_buffer& a, const memtrack_buffer& b) noexcept {
    return a.buffer_id == b.buffer_id && a.parent_id == b.parent_id && a.address == b.address &&
           a.size == b.size && a.device_id == b.device_id && a.kind == b.kind && a.flags == b.flags;
}

/// The chip a Device-like object is: build_id() is the chip id of a chip
/// and the reference chip of a MeshDevice (tt_metal: MeshDeviceImpl::build_id).
template <class Device>
std::uint32_t chip_id(const Device& device) {
    return static_cast<std::uint32_t>(device.build_id());
}

/// The records of the Buffers this process reported and has not freed, by
/// Buffer::unique_id(). An entry is a Buffer's own record plus the records
/// that die with it (a backing buffer's device buffers), so a free needs
/// nothing but the unique id: no device, no allocator, nothing that may be
/// gone by then.
class buffer_ledger {
public:
    struct entry {
        memtrack_buffer own;
        std::vector<memtrack_buffer> dependents;
    };
    using node = std::unordered_map<std::uint64_t, entry>::node_type;

    static buffer_ledger& instance() {
        // Leaked on purpose: a Buffer may be freed from a static destructor
        // after this ledger's would have run.
        static buffer_ledger* ledger = new buffer_ledger();
        return *ledger;
    }

    /// Remembers a Buffer's record; false if that Buffer has one already
    /// (then nothing is to be sent).
    bool add(std::uint64_t key, const memtrack_buffer& own) {
        shard& s = shard_of(key);
        std::lock_guard<std::mutex> lock(s.mutex);
        const bool inserted = s.entries.emplace(key, entry{own, {}}).second;
        if (inserted) {
            live_.fetch_add(1, std::memory_order_relaxed);
        }
        return inserted;
    }

    /// Adds a record that dies with the Buffer `key`; false if that Buffer
    /// was not reported (then neither is this record).
    bool attach(std::uint64_t key, const memtrack_buffer& dependent) {
        shard& s = shard_of(key);
        std::lock_guard<std::mutex> lock(s.mutex);
        auto it = s.entries.find(key);
        if (it == s.entries.end()) {
            return false;
        }
        it->second.dependents.push_back(dependent);
        return true;
    }

    /// Takes the entry of Buffer `key` out (empty if it has none).
    node take(std::uint64_t key) {
        // Nothing reported, nothing to look up: with tracking off, frees
        // cost this one load. Relaxed suffices: an entry is added on the
        // thread that allocated the Buffer, and tt_metal hands the Buffer
        // to the freeing thread through its own synchronisation, after
        // which this load sees the increment (or a later value, which
        // counts this entry until it is taken).
        if (live_.load(std::memory_order_relaxed) == 0) {
            return {};
        }
        shard& s = shard_of(key);
        std::lock_guard<std::mutex> lock(s.mutex);
        node n = s.entries.extract(key);
        if (!n.empty()) {
            live_.fetch_sub(1, std::memory_order_relaxed);
        }
        return n;
    }

private:
    static constexpr std::size_t kShards = 16;
    struct shard {
        std::mutex mutex;
        std::unordered_map<std::uint64_t, entry> entries;
    };

    shard& shard_of(std::uint64_t key) { return shards_[key % kShards]; }

    std::array<shard, kShards> shards_;
    std::atomic<std::size_t> live_{0};
};

/// The circular-buffer records this process reported and has not freed,
/// by program id: one record per (circular buffer, chip).
class program_ledger {
public:
    static program_ledger& instance() {
        static program_ledger* ledger = new program_ledger();  // leaked, as buffer_ledger
        return *ledger;
    }

    /// Makes `placed` the record of its (circular buffer, chip) in program
    /// `program_id`: nothing if it already is; else the old record's free,
    /// then `placed`'s allocation. Sent under the lock, so two threads
    /// placing one program's circular buffers keep each pair in order.
    void place(std::uint64_t program_id, const memtrack_buffer& placed) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto& records = programs_[program_id];
        for (auto& r : records) {
            if (r.buffer_id == placed.buffer_id && r.device_id == placed.device_id) {
                if (same_record(r, placed)) {
                    return;
                }
                memtrack_free_buffer(&r);  // what was reported, not what the CB says now
                r = placed;
                memtrack_alloc_buffer(&r);
                return;
            }
        }
        records.push_back(placed);
        live_.store(true, std::memory_order_relaxed);
        memtrack_alloc_buffer(&records.back());
    }

    /// Frees every record of program `program_id`, as reported.
    void release(std::uint64_t program_id) {
        // Relaxed: a program's records are placed on threads that hand
        // the program to its destroying thread through tt_metal's own
        // synchronisation (as in buffer_ledger::take).
        if (!live_.load(std::memory_order_relaxed)) {
            return;
        }
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = programs_.find(program_id);
        if (it == programs_.end()) {
            return;
        }
        for (const auto& r : it->second) {
            memtrack_free_buffer(&r);
        }
        programs_.erase(it);
    }

private:
    std::mutex mutex_;
    std::unordered_map<std::uint64_t, std::vector<memtrack_buffer>> programs_;
    std::atomic<bool> live_{false};
};

}  // namespace detail

/// Whether this process records events (the first call attaches from
/// MEMTRACK_RING).
inline bool enabled() noexcept { return memtrack_enabled() != 0; }

/// Buffer::allocate_impl, once allocator_->allocate_buffer(this) returned
/// (never for an allocation a GraphTracker hook intercepted: that buffer
/// has address 0 and no memory). `MeshDevice` is the runtime's mesh device
/// type: a buffer on one is a MeshBuffer's backing buffer, reported ALIAS
/// on the reference chip (its device buffers carry the bytes).
template <class MeshDevice, class Buffer>
void buffer_allocated(const Buffer& buffer) {
    if (!enabled()) {
        return;
    }
    const auto* device = buffer.device();
    const bool on_mesh = dynamic_cast<const MeshDevice*>(device) != nullptr;
    // BufferType's values 0..4 are MEMTRACK_KIND_DRAM..MEMTRACK_KIND_TRACE.
    const memtrack_buffer own = detail::record(
        static_cast<std::uint64_t>(buffer.unique_id()), 0, static_cast<std::uint64_t>(buffer.address()),
        static_cast<std::uint64_t>(buffer.aligned_size()), detail::chip_id(*device),
        static_cast<std::uint8_t>(buffer.buffer_type()), on_mesh ? MEMTRACK_FLAG_ALIAS : 0);
    if (detail::buffer_ledger::instance().add(own.buffer_id, own)) {
        memtrack_alloc_buffer(&own);
    }
}

/// Buffer::deallocate_impl and Buffer::mark_as_deallocated, while the
/// buffer is still ALLOCATED: sends the frees of what buffer_allocated and
/// mesh_buffer_allocated reported for it (device buffers first), and
/// nothing for a buffer they did not report. Reads only unique_id(): the
/// buffer's device may be closed or destroyed by now.
template <class Buffer>
void buffer_deallocated(const Buffer& buffer) {
    auto n = detail::buffer_ledger::instance().take(static_cast<std::uint64_t>(buffer.unique_id()));
    if (n.empty()) {
        return;
    }
    for (const auto& r : n.mapped().dependents) {
        memtrack_free_buffer(&r);
    }
    memtrack_free_buffer(&n.mapped().own);
}

/// MeshBuffer::initialize_device_buffers, once every local device buffer
/// exists: each of `device_buffers` (a range; `local` maps an element to a
/// Buffer pointer, null for a remote chip) is reported on its chip, with
/// the bytes, parent = the backing buffer, dying with it. Nothing if there
/// is no backing buffer (an externally owned mesh buffer: its memory is
/// someone else's, or per-core buffers that report themselves) or the
/// backing buffer was not reported (0 bytes, intercepted).
template <class Buffer, class Range, class Local>
void mesh_buffer_allocated(const Buffer* backing, const Range& device_buffers, Local local) {
    if (backing == nullptr || !enabled()) {
        return;
    }
    const auto parent = static_cast<std::uint64_t>(backing->unique_id());
    for (const auto& element : device_buffers) {
        const Buffer* b = local(element);
        if (b == nullptr) {
            continue;
        }
        const memtrack_buffer r = detail::record(
            static_cast<std::uint64_t>(b->unique_id()), parent, static_cast<std::uint64_t>(b->address()),
            static_cast<std::uint64_t>(b->aligned_size()), detail::chip_id(*b->device()),
            static_cast<std::uint8_t>(b->buffer_type()), 0);
        if (!detail::buffer_ledger::instance().attach(parent, r)) {
            return;
        }
        memtrack_alloc_buffer(&r);
    }
}

/// ProgramImpl::allocate_circular_buffers, once every circular buffer has
/// its address (after set_locally_allocated_address): reports the current
/// placement of each of `circular_buffers` (pointers) on each of `chips`
/// (pointers to chips, not a MeshDevice): kind CB, parent = the program,
/// ALIAS if globally allocated (it lives in an L1 Buffer already counted).
/// A circular buffer already reported there with another address or size
/// is freed as reported first.
template <class CircularBuffers, class Chips>
void circular_buffers_placed(std::uint64_t program_id, const CircularBuffers& circular_buffers, const Chips& chips) {
    if (!enabled()) {
        return;
    }
    auto& ledger = detail::program_ledger::instance();
    for (const auto& chip : chips) {
        const std::uint32_t id = detail::chip_id(*chip);
        for (const auto& cb : circular_buffers) {
            const auto cores = static_cast<std::uint64_t>(cb->core_ranges().num_cores());
            ledger.place(program_id, detail::record(static_cast<std::uint64_t>(cb->id()), program_id,
                                                    static_cast<std::uint64_t>(cb->address()),
                                                    static_cast<std::uint64_t>(cb->size()) * cores, id,
                                                    MEMTRACK_KIND_CB,
                                                    cb->globally_allocated() ? MEMTRACK_FLAG_ALIAS : 0));
        }
    }
}

/// ProgramImpl::deallocate_circular_buffers (from ~ProgramImpl): frees
/// every circular buffer of the program as it was reported, without
/// touching the devices it was placed on.
inline void circular_buffers_released(std::uint64_t program_id) {
    detail::program_ledger::instance().release(program_id);
}

/// Where a chip's allocator is created: its allocatable bytes of `kind`,
/// summed over banks (the units of aligned_size()).
inline void chip_capacity(std::uint32_t chip, std::uint8_t kind, std::uint64_t bytes) {
    if (enabled()) {
        memtrack_set_capacity(chip, kind, bytes);
    }
}

/// An op began on this thread (GraphTracker::track_function_start): its
/// allocations until the matching op_end are attributed to it, nested ops
/// making a path. Names are cut to 255 bytes (the C ABI needs a NUL).
inline void op_begin(const char* name, std::size_t length) noexcept {
    char buffer[256];
    const std::size_t n = length < sizeof buffer - 1 ? length : sizeof buffer - 1;
    for (std::size_t i = 0; i < n; i++) {
        buffer[i] = name[i];
    }
    buffer[n] = '\0';
    memtrack_scope_begin(buffer);
}

/// The op begun last on this thread ended (GraphTracker::track_function_end).
inline void op_end() noexcept { memtrack_scope_end(); }

}  // namespace memtrack::tt_metal

#endif /* MEMTRACK_TT_METAL_HPP */
