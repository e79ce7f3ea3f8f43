//! Slab caches of kernel objects on pages from the locked bitmap: typed task
//! structs, the per-hart front, and a double free refused with an error.

use core::ptr::NonNull;

use kalloc_api::FreeError;
use kalloc_slab::{PinnedPerCpuCache, SlabBox, SlabCache, SlabConfig, TypedCache};

use crate::entry::MAX_HARTS;
use crate::println;
use crate::rng::XorShift;
use crate::stack::{Pages, Stack};

/// Tasks held at once in the churn test: enough to need several slabs.
const LIVE_TASKS: usize = 300;

/// A kernel task control block, the classic slab object.
struct Task {
    id: u64,
    state: TaskState,
    kernel_stack_top: usize,
    saved_registers: [u64; 14],
    name: [u8; 16],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskState {
    Ready,
    Blocked,
}

impl Task {
    fn new(id: u64) -> Self {
        Self {
            id,
            state: TaskState::Ready,
            kernel_stack_top: 0x8000_0000 + (id as usize) * 0x4000,
            saved_registers: core::array::from_fn(|i| id.wrapping_mul(31) ^ i as u64),
            name: [b't'; 16],
        }
    }

    fn check(&self) {
        assert_eq!(
            self.kernel_stack_top,
            0x8000_0000 + (self.id as usize) * 0x4000
        );
        for (i, value) in self.saved_registers.iter().enumerate() {
            assert_eq!(
                *value,
                self.id.wrapping_mul(31) ^ i as u64,
                "task {} corrupted",
                self.id
            );
        }
        assert_eq!(self.name, [b't'; 16]);
    }
}

/// Runs the slab tests; every page they take goes back to the bitmap.
pub fn run(stack: &'static Stack) {
    let pages = stack.pages();
    let free_before = bitmap_free(stack);
    typed_task_churn(&pages);
    double_free_is_refused(&pages);
    assert_eq!(
        bitmap_free(stack),
        free_before,
        "the slab caches gave every page back"
    );
}

/// Per-hart caches for the concurrent test: pinned magazines, used with no
/// lock, each hart naming itself with a `PinnedCpu` token.
pub type SharedTasks = PinnedPerCpuCache<MAX_HARTS>;

/// A per-hart cache of task-sized objects for the concurrent test.
pub fn shared_task_cache() -> SharedTasks {
    PinnedPerCpuCache::new(SlabConfig::new(size_of::<Task>(), align_of::<Task>()))
        .unwrap_or_else(|error| panic!("task cache: {error:?}"))
}

fn bitmap_free(stack: &Stack) -> usize {
    use kalloc_api::FrameAllocator;
    stack.bitmap.free_frames()
}

fn typed_task_churn(pages: &Pages) {
    let mut tasks = TypedCache::<Task>::new().unwrap_or_else(|error| panic!("tasks: {error:?}"));
    let mut live: [Option<SlabBox<Task>>; LIVE_TASKS] = core::array::from_fn(|_| None);
    let mut rng = XorShift::new(0x7a5c);
    for id in 0..5_000u64 {
        let slot = &mut live[rng.below(LIVE_TASKS)];
        if let Some(mut old) = slot.take() {
            old.check();
            old.state = TaskState::Blocked;
            let task = tasks
                .take(old, pages)
                .unwrap_or_else(|error| panic!("task free: {error:?}"));
            assert_eq!(task.state, TaskState::Blocked);
        }
        let task = tasks
            .allocate(Task::new(id), pages)
            .unwrap_or_else(|error| panic!("task allocate: {error:?}"));
        *slot = Some(task);
    }
    let stats = tasks.stats();
    let held = live.iter().filter(|task| task.is_some()).count();
    assert_eq!(stats.objects_in_use, held);
    println!(
        "slab      tasks: {} in use in {} slab(s) of {} page(s), {} per slab",
        stats.objects_in_use, stats.slabs, stats.pages_per_slab, stats.objects_per_slab
    );
    for task in live.iter_mut().filter_map(Option::take) {
        task.check();
        tasks
            .free(task, pages)
            .unwrap_or_else(|error| panic!("task free: {error:?}"));
    }
    // Two timer periods without use: the second reap gives back all but
    // the slab a one-object cycle would keep.
    tasks.reap(pages);
    let reaped = tasks.reap(pages);
    assert!(tasks.stats().slabs <= 1, "{:?}", tasks.stats());
    tasks.shrink(0, pages);
    assert_eq!(tasks.stats().objects_in_use, 0);
    assert_eq!(tasks.stats().slabs, 0);
    println!("slab      tasks: reap gave back {reaped} idle slab(s)");
}

fn double_free_is_refused(pages: &Pages) {
    let mut cache = SlabCache::new(SlabConfig::new(size_of::<Task>(), align_of::<Task>()))
        .unwrap_or_else(|error| panic!("cache: {error:?}"));
    let object: NonNull<u8> = cache
        .allocate(pages)
        .unwrap_or_else(|error| panic!("allocate: {error:?}"));
    // SAFETY: the object came from this cache and is not used again.
    unsafe { cache.deallocate(object, pages) }.unwrap_or_else(|error| panic!("free: {error:?}"));
    // SAFETY: the slab is still held by the cache (not shrunk), so its header
    // is readable; the second free must be refused.
    let again = unsafe { cache.deallocate(object, pages) };
    assert_eq!(again, Err(FreeError::DoubleFree), "double free accepted");
    cache.shrink(0, pages);
    assert_eq!(cache.stats().slabs, 0);
    println!("slab      double free refused: {:?}", again.unwrap_err());
}
