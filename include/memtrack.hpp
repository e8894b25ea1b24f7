/*
 * memtrack.hpp: a header-only C++17 adapter from tt_metal's objects to the
 * C ABI of include/memtrack.h, so that each hook in tt_metal is one line.
 *
 * Every function is a template over "anything shaped like" the tt_metal
 * class it reports, so this header needs none of tt_metal's headers:
 *
 *   Buffer-like        b.device()->id(), b.buffer_type(), b.unique_id(),
 *                      b.address(), b.size()
 *   MeshBuffer-like    m.get_backing_buffer() (pointer-like, may be null),
 *                      and m.unique_id() if it has one
 *   Program-like       p.get_id() (or p.id() / p.unique_id())
 *   CircularBuffer-like c.id(), c.address(), c.size(), and
 *                      c.globally_allocated() if it has one
 *   Device-like        d.id()
 *
 * Wherever an object is expected, a raw pointer, a smart pointer or a
 * reference to it works too; a null pointer makes the call a no-op.
 *
 * Cost when tracking is off: one call of memtrack_enabled() (one load and
 * one branch inside) per hook, before any accessor of the tt_metal object
 * runs. Define MEMTRACK_DISABLE to compile every hook to nothing; the
 * program then needs no libmemtrack at link time.
 *
 * tt_metal itself is hooked by integrations/tt-metal/memtrack.patch, with
 * the rules of include/memtrack_tt_metal.hpp (frees sent from what was
 * reported, chip ids, no views, no separate kernel records): see
 * docs/tt-metal.md before using these calls for tt_metal's objects.
 */
#ifndef MEMTRACK_HPP
#define MEMTRACK_HPP

#include <cstdint>
#include <type_traits>
#include <utility>

#include "memtrack.h"

namespace memtrack {

/// How a buffer relates to others: its owner (the mesh buffer of a device
/// buffer, the program of a pool buffer or circular buffer; 0 = none) and
/// its MEMTRACK_FLAG_* bits. A Buffer keeps its link for its whole life:
/// the free must carry the same flags as the allocation, or the live byte
/// counters drift.
struct link {
    std::uint64_t parent_id = 0;
    std::uint8_t flags = 0;
};

namespace detail {

template <class...>
inline constexpr bool always_false = false;

// Pointer-like: raw pointers, smart pointers, optionals.
template <class T, class = void>
struct is_pointer_like : std::false_type {};
template <class T>
struct is_pointer_like<T, std::void_t<decltype(*std::declval<const T&>()),
                                      decltype(static_cast<bool>(std::declval<const T&>()))>>
    : std::true_type {};

/// The object `x` is or points to (through any number of pointers).
template <class T>
const auto& object(const T& x) {
    if constexpr (is_pointer_like<T>::value) {
        return object(*x);
    } else {
        return x;
    }
}

/// Whether `x`, or a pointer on the way to the object, is null.
template <class T>
bool is_null(const T& x) {
    if constexpr (is_pointer_like<T>::value) {
        return !static_cast<bool>(x) || is_null(*x);
    } else {
        return false;
    }
}

template <class T, class = void>
struct has_unique_id : std::false_type {};
template <class T>
struct has_unique_id<T, std::void_t<decltype(std::declval<const T&>().unique_id())>> : std::true_type {};

template <class T, class = void>
struct has_get_id : std::false_type {};
template <class T>
struct has_get_id<T, std::void_t<decltype(std::declval<const T&>().get_id())>> : std::true_type {};

template <class T, class = void>
struct has_id : std::false_type {};
template <class T>
struct has_id<T, std::void_t<decltype(std::declval<const T&>().id())>> : std::true_type {};

template <class T, class = void>
struct has_globally_allocated : std::false_type {};
template <class T>
struct has_globally_allocated<T, std::void_t<decltype(std::declval<const T&>().globally_allocated())>>
    : std::true_type {};

/// The identity of a tt_metal object: unique_id(), else get_id(), else id().
template <class T>
std::uint64_t id_of(const T& x) {
    if constexpr (has_unique_id<T>::value) {
        return static_cast<std::uint64_t>(x.unique_id());
    } else if constexpr (has_get_id<T>::value) {
        return static_cast<std::uint64_t>(x.get_id());
    } else if constexpr (has_id<T>::value) {
        return static_cast<std::uint64_t>(x.id());
    } else {
        static_assert(always_false<T>, "memtrack: the object needs unique_id(), get_id() or id()");
        return 0;
    }
}

/// The id of a Device-like object (tt_metal: IDevice::id(), a chip id).
template <class D>
std::uint64_t device_id(const D& device) {
    return static_cast<std::uint64_t>(object(device).id());
}

// Every call into libmemtrack sits under `#if !defined(MEMTRACK_DISABLE)`
// (here and in mark()), so that the define removes the link dependency even
// at -O0, where dead branches are still compiled.
inline bool enabled() noexcept {
#if defined(MEMTRACK_DISABLE)
    return false;
#else
    return memtrack_enabled() != 0;
#endif
}

inline void send(bool alloc, const memtrack_buffer& b) noexcept {
#if defined(MEMTRACK_DISABLE)
    (void)alloc;
    (void)b;
#else
    if (alloc) {
        memtrack_alloc_buffer(&b);
    } else {
        memtrack_free_buffer(&b);
    }
#endif
}

inline memtrack_buffer record(std::uint64_t buffer_id, std::uint64_t address, std::uint64_t size,
                              std::uint64_t device_id, std::uint8_t kind, link l) noexcept {
    memtrack_buffer b{};
    b.buffer_id = buffer_id;
    b.parent_id = l.parent_id;
    b.address = address;
    b.size = size;
    b.device_id = static_cast<std::uint32_t>(device_id);
    b.kind = kind;
    b.flags = l.flags;
    return b;
}

/// Reports one Buffer-like object; the caller has checked enabled().
template <class B>
void buffer_event(bool alloc, const B& buffer, link l) {
    if (is_null(buffer)) {
        return;
    }
    const auto& b = object(buffer);
    const auto& device = b.device();
    if (is_null(device)) {
        return;  // not on a device: nothing to track
    }
    // BufferType's values 0..4 are the MEMTRACK_KIND_* values 0..4.
    send(alloc, record(static_cast<std::uint64_t>(b.unique_id()), static_cast<std::uint64_t>(b.address()),
                       static_cast<std::uint64_t>(b.size()), device_id(device),
                       static_cast<std::uint8_t>(b.buffer_type()), l));
}

struct identity {
    template <class T>
    const T& operator()(const T& x) const noexcept {
        return x;
    }
};

template <class M, class R, class P>
void mesh_event(bool alloc, const M& mesh, const R& device_buffers, P project);

template <class P, class D, class C>
void circular_buffer_event(bool alloc, const P& program, const D& device, const C& cb);

}  // namespace detail

/// Whether this process records events. The first call attaches from
/// MEMTRACK_RING; memtrack_init and memtrack_shutdown change the answer.
inline bool enabled() noexcept { return detail::enabled(); }

/// A buffer that owns its memory and belongs to nothing: the default.
inline constexpr link standalone{};

/// The link of a buffer owned by `owner` (a program's pool buffer, a mesh
/// buffer's device buffer): parent_id = the owner's id.
template <class Owner>
link owned_by(const Owner& owner) {
    return link{detail::id_of(detail::object(owner)), 0};
}

/// The link of a buffer whose bytes other live buffers already count: a
/// mesh buffer's backing buffer, or a buffer created at the address of
/// another live buffer on the same device.
inline constexpr link alias(std::uint64_t parent_id = 0) { return link{parent_id, MEMTRACK_FLAG_ALIAS}; }

/// Reports that a Buffer-like object was allocated (tt_metal: at the end of
/// Buffer::allocate_impl, and in Buffer::create for a preallocated address).
template <class B>
void buffer_allocated(const B& buffer, link l = standalone) {
    if (enabled()) {
        detail::buffer_event(true, buffer, l);
    }
}

/// Reports that a Buffer-like object was freed, with the link it was
/// allocated with (tt_metal: Buffer::deallocate_impl, mark_as_deallocated).
template <class B>
void buffer_deallocated(const B& buffer, link l = standalone) {
    if (enabled()) {
        detail::buffer_event(false, buffer, l);
    }
}

/// The id that a MeshBuffer-like object's device buffers carry as
/// parent_id: its unique_id() if it has one, else its backing buffer's
/// unique_id(), else 0 (an externally owned mesh buffer without either).
template <class M>
std::uint64_t mesh_buffer_id(const M& mesh) {
    const auto& m = detail::object(mesh);
    using Mesh = std::decay_t<decltype(m)>;
    if constexpr (detail::has_unique_id<Mesh>::value) {
        return static_cast<std::uint64_t>(m.unique_id());
    } else {
        const auto& backing = m.get_backing_buffer();
        return detail::is_null(backing) ? 0 : static_cast<std::uint64_t>(detail::object(backing).unique_id());
    }
}

/// Reports a whole MeshBuffer-like object as allocated: its backing buffer
/// with MEMTRACK_FLAG_ALIAS (the device buffers count the bytes), then each
/// of `device_buffers` with parent_id = mesh_buffer_id(mesh).
/// `device_buffers` is any range; `project` maps an element to a
/// Buffer-like object or pointer (null: skipped, e.g. a remote device).
/// For a mesh buffer whose Buffers are not reported from buffer.cpp.
template <class M, class R, class P = detail::identity>
void mesh_buffer_allocated(const M& mesh, const R& device_buffers, P project = {}) {
    if (enabled()) {
        detail::mesh_event(true, mesh, device_buffers, project);
    }
}

/// The frees matching mesh_buffer_allocated: device buffers, then backing.
template <class M, class R, class P = detail::identity>
void mesh_buffer_deallocated(const M& mesh, const R& device_buffers, P project = {}) {
    if (enabled()) {
        detail::mesh_event(false, mesh, device_buffers, project);
    }
}

/// Reports that a CircularBuffer-like object of a Program-like object was
/// allocated on a Device-like object (tt_metal: where
/// Program::allocate_circular_buffers calls GraphTracker::track_allocate_cb).
/// Kind CB, parent_id = the program's id, buffer_id = the circular buffer's
/// id(); a globally allocated one (living in a Buffer that is already
/// reported) carries MEMTRACK_FLAG_ALIAS.
template <class P, class D, class C>
void circular_buffer_allocated(const P& program, const D& device, const C& cb) {
    if (enabled()) {
        detail::circular_buffer_event(true, program, device, cb);
    }
}

/// The free matching circular_buffer_allocated (tt_metal: when the program
/// releases its circular buffers on that device, in ~Program).
template <class P, class D, class C>
void circular_buffer_deallocated(const P& program, const D& device, const C& cb) {
    if (enabled()) {
        detail::circular_buffer_event(false, program, device, cb);
    }
}

/// Reports a kernel binary of a Program-like object written to a device:
/// kind KERNEL, parent_id = the program's id. `kernel_id` must tell apart
/// the live kernels of one process on one device (a Kernel's address does).
template <class P, class D>
void kernel_loaded(const P& program, const D& device, std::uint64_t kernel_id, std::uint64_t address,
                   std::uint64_t size) {
    if (enabled() && !detail::is_null(program) && !detail::is_null(device)) {
        detail::send(true, detail::record(kernel_id, address, size, detail::device_id(device),
                                          MEMTRACK_KIND_KERNEL, owned_by(program)));
    }
}

/// The free matching kernel_loaded, with the same arguments.
template <class P, class D>
void kernel_unloaded(const P& program, const D& device, std::uint64_t kernel_id, std::uint64_t address,
                     std::uint64_t size) {
    if (enabled() && !detail::is_null(program) && !detail::is_null(device)) {
        detail::send(false, detail::record(kernel_id, address, size, detail::device_id(device),
                                           MEMTRACK_KIND_KERNEL, owned_by(program)));
    }
}

/// A phase marker (labels up to 1024 bytes kept whole).
inline void mark(const char* label) noexcept {
#if defined(MEMTRACK_DISABLE)
    (void)label;
#else
    memtrack_mark(label);
#endif
}

/// Opens a scope on this thread for the guard's lifetime: allocations the
/// thread records meanwhile are attributed to it (nested guards make a
/// path, "outer/inner"). A null name opens nothing, and then closes
/// nothing. Not copyable or movable: the scope ends where it began.
///
///     memtrack::scope op{"matmul"};
class scope {
public:
    explicit scope(const char* name) noexcept : open_(name != nullptr) {
#if defined(MEMTRACK_DISABLE)
        (void)name;
#else
        if (open_) {
            memtrack_scope_begin(name);
        }
#endif
    }
    ~scope() {
#if !defined(MEMTRACK_DISABLE)
        if (open_) {
            memtrack_scope_end();
        }
#endif
    }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;
    scope(scope&&) = delete;
    scope& operator=(scope&&) = delete;

private:
    bool open_;
};

namespace detail {

template <class M, class R, class P>
void mesh_event(bool alloc, const M& mesh, const R& device_buffers, P project) {
    if (is_null(mesh)) {
        return;
    }
    const auto& backing = object(mesh).get_backing_buffer();
    const link device_link{mesh_buffer_id(mesh), 0};
    // Allocation: the backing buffer first, as tt_metal creates it first.
    if (alloc) {
        buffer_event(true, backing, alias());
    }
    for (const auto& element : device_buffers) {
        buffer_event(alloc, project(element), device_link);
    }
    if (!alloc) {
        buffer_event(false, backing, alias());
    }
}

template <class P, class D, class C>
void circular_buffer_event(bool alloc, const P& program, const D& device, const C& cb) {
    if (is_null(program) || is_null(device) || is_null(cb)) {
        return;
    }
    const auto& c = object(cb);
    link l = owned_by(program);
    if constexpr (has_globally_allocated<std::decay_t<decltype(c)>>::value) {
        if (c.globally_allocated()) {
            l.flags = MEMTRACK_FLAG_ALIAS;
        }
    }
    send(alloc, record(static_cast<std::uint64_t>(c.id()), static_cast<std::uint64_t>(c.address()),
                       static_cast<std::uint64_t>(c.size()), device_id(device), MEMTRACK_KIND_CB, l));
}

}  // namespace detail
}  // namespace memtrack

#endif /* MEMTRACK_HPP */
