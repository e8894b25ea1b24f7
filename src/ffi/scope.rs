//! Scopes: each thread's stack of named scopes, carried by ALLOC records as
//! one compact node id.
//!
//! A node is (parent node, name): the path "a/b/c" is node c, whose parent
//! is b, whose parent is a. Node ids are per writer (per process attach):
//! the first use of a node in the process takes a lock and writes its SCOPE
//! record (so each name travels once per process and node); each thread
//! then caches it, and later `begin`/`end` calls of that thread are hash
//! lookups in thread-local maps: no lock, no system call, no allocation.
//!
//! The "epoch" of the cached ids is the address of the writer they belong
//! to (writers are leaked, never freed, so an address names one writer): a
//! forked child attaches its own writer, and a thread finding its ids of
//! another epoch interns its stack anew.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{LazyLock, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use crate::format::MAX_RESERVED_ID;
use crate::hook_thread::HookThread;
use crate::writer::Writer;

/// Deepest nesting tracked; deeper scopes are counted (so their ends pair
/// up) but allocations in them are attributed to the deepest one tracked.
const MAX_DEPTH: usize = 64;

/// The node id allocations get once the process has used every id.
const OUT_OF_IDS: u32 = MAX_RESERVED_ID;

/// The longest a thread waits for the process-wide tables' lock: only a
/// first use takes it, for a few record pushes; a child forked while
/// another thread held it would wait forever, and gives up instead.
const LOCK_WAIT_LIMIT: Duration = Duration::from_millis(500);

/// A small multiplicative hasher: names are hashed on every call, and
/// SipHash's flooding resistance buys nothing for the runtime's own names.
#[derive(Default)]
struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last) ^ bytes.len() as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    #[inline(always)]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Every name this process used, never freed: ids index `bytes`.
#[derive(Default)]
struct Names {
    ids: FxMap<&'static [u8], u32>,
    bytes: Vec<&'static [u8]>,
}

/// The nodes of one writer: (parent, name id) → node id.
#[derive(Default)]
struct Nodes {
    epoch: usize,
    ids: FxMap<(u32, u32), u32>,
    last: u32,
}

static NAMES: LazyLock<Mutex<Names>> = LazyLock::new(Mutex::default);
static NODES: LazyLock<Mutex<Nodes>> = LazyLock::new(Mutex::default);

/// Locks `mutex`, waiting at most [`LOCK_WAIT_LIMIT`].
fn lock_bounded<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    let start = Instant::now();
    loop {
        match mutex.try_lock() {
            Ok(guard) => return Some(guard),
            // A panic while holding it left the tables consistent (every
            // update is a single insert).
            Err(TryLockError::Poisoned(poisoned)) => return Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT_LIMIT => std::thread::yield_now(),
            Err(TryLockError::WouldBlock) => return None,
        }
    }
}

/// Name id used when the tables could not be reached: the scope is pushed
/// (so `end` pairs up) and attributes to its parent.
const NO_NAME: u32 = u32::MAX;

/// One thread's scopes.
struct Thread {
    /// The writer the node ids below are of.
    epoch: usize,
    /// (name id, node id), innermost last.
    stack: Vec<(u32, u32)>,
    /// Scopes begun beyond [`MAX_DEPTH`], not on `stack`.
    overflow: usize,
    names: FxMap<Box<[u8]>, u32>,
    nodes: FxMap<(u32, u32), u32>,
}

thread_local! {
    // The (epoch, innermost node) the ALLOC hook reads lives in the hook's
    // own thread state (`hook_thread`), beside its counter lane: one TLS
    // access per hook for both.
    static THREAD: RefCell<Thread> = RefCell::new(Thread {
        epoch: 0,
        stack: Vec::new(),
        overflow: 0,
        names: FxMap::default(),
        nodes: FxMap::default(),
    });
}

fn epoch_of(writer: &'static Writer) -> usize {
    std::ptr::from_ref(writer).addr()
}

impl Thread {
    fn name_id(&mut self, name: &[u8]) -> u32 {
        if let Some(&id) = self.names.get(name) {
            return id;
        }
        let Some(mut names) = lock_bounded(&NAMES) else { return NO_NAME };
        let id = match names.ids.get(name) {
            Some(&id) => id,
            None => {
                let id = names.bytes.len() as u32;
                let bytes: &'static [u8] = Box::leak(name.to_vec().into_boxed_slice());
                names.ids.insert(bytes, id);
                names.bytes.push(bytes);
                id
            }
        };
        drop(names);
        self.names.insert(name.into(), id);
        id
    }

    fn node(&mut self, writer: &'static Writer, parent: u32, name_id: u32) -> u32 {
        if name_id == NO_NAME {
            return parent;
        }
        if let Some(&node) = self.nodes.get(&(parent, name_id)) {
            return node;
        }
        let Some(node) = intern_node(writer, parent, name_id) else { return parent };
        self.nodes.insert((parent, name_id), node);
        node
    }

    /// Makes the node ids on the stack those of `writer`.
    fn sync(&mut self, writer: &'static Writer) {
        let epoch = epoch_of(writer);
        if self.epoch == epoch {
            return;
        }
        self.epoch = epoch;
        self.nodes.clear();
        let mut parent = 0;
        for i in 0..self.stack.len() {
            let name_id = self.stack[i].0;
            parent = self.node(writer, parent, name_id);
            self.stack[i].1 = parent;
        }
    }

    fn publish(&self) {
        let current = (self.epoch, self.stack.last().map_or(0, |e| e.1));
        crate::hook_thread::with(|t| {
            if let Some(t) = t {
                t.scope.set(current);
            }
        });
    }
}

/// The node (parent, name) of `writer`'s process, defined on first use.
#[cold]
fn intern_node(writer: &'static Writer, parent: u32, name_id: u32) -> Option<u32> {
    let name = *lock_bounded(&NAMES)?.bytes.get(name_id as usize)?;
    let mut nodes = lock_bounded(&NODES)?;
    let epoch = epoch_of(writer);
    if nodes.epoch != epoch {
        *nodes = Nodes { epoch, ..Nodes::default() };
    }
    if let Some(&node) = nodes.ids.get(&(parent, name_id)) {
        return Some(node);
    }
    if nodes.last >= OUT_OF_IDS - 1 {
        return Some(OUT_OF_IDS);
    }
    nodes.last += 1;
    let node = nodes.last;
    nodes.ids.insert((parent, name_id), node);
    // Under the lock: the definition precedes every record that uses it.
    writer.define_scope(node, parent, name);
    Some(node)
}

/// `memtrack_scope_begin`.
pub(crate) fn begin(writer: &'static Writer, name: &[u8]) {
    let _ = THREAD.try_with(|thread| {
        let Ok(mut t) = thread.try_borrow_mut() else { return };
        if t.stack.len() >= MAX_DEPTH {
            t.overflow += 1;
            return;
        }
        if t.stack.capacity() == 0 {
            t.stack.reserve_exact(MAX_DEPTH);
        }
        t.sync(writer);
        let name_id = t.name_id(name);
        let parent = t.stack.last().map_or(0, |e| e.1);
        let node = t.node(writer, parent, name_id);
        t.stack.push((name_id, node));
        t.publish();
    });
}

/// `memtrack_scope_end`.
pub(crate) fn end(writer: &'static Writer) {
    let _ = THREAD.try_with(|thread| {
        let Ok(mut t) = thread.try_borrow_mut() else { return };
        if t.overflow > 0 {
            t.overflow -= 1;
            return;
        }
        if t.stack.pop().is_some() {
            t.sync(writer);
            t.publish();
        }
    });
}

/// The node this thread's allocations are attributed to now (0: none),
/// from the thread's hook state.
#[inline(always)]
pub(crate) fn current(thread: &HookThread, writer: &'static Writer) -> u32 {
    let (epoch, node) = thread.scope.get();
    if node == 0 || epoch == epoch_of(writer) { node } else { resync(writer) }
}

/// The thread's ids are of another writer (a forked child): intern anew.
#[cold]
#[inline(never)]
fn resync(writer: &'static Writer) -> u32 {
    THREAD
        .try_with(|thread| {
            let Ok(mut t) = thread.try_borrow_mut() else { return 0 };
            t.sync(writer);
            t.publish();
            t.stack.last().map_or(0, |e| e.1)
        })
        .unwrap_or(0)
}
