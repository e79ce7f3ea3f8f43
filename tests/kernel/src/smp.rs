//! The concurrent test: every hart allocates and frees at the same time from
//! each shared allocator, keeps an ownership stamp in whatever it holds, and
//! logs every hand-out and give-back in one global order. Hart 0 then replays
//! the log and checks that no two holders ever overlapped.
//!
//! Why the log order is sound: a hart takes its log sequence number *after* an
//! allocation returns and *before* it frees. If hart B receives memory that
//! hart A gave back, the allocator's own synchronisation orders A's free before
//! B's allocation, so A's sequence number is smaller than B's; legitimate reuse
//! therefore never shows overlapping lifetimes in the log, and any overlap the
//! replay finds is two holders at once.

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::ptr::NonNull;

use kalloc_api::sync::{AtomicBool, AtomicUsize, Ordering};
use kalloc_api::{FrameAllocator, FrameRange, PinnedCpu};

use crate::rng::XorShift;
use crate::stack::Stack;
use crate::{entry, machine, println};

/// Allocations each hart makes (each is freed again, so twice as many log entries).
const OPS_PER_HART: usize = 20_000;
/// Allocations a hart holds at once; a random one is replaced each step.
const LIVE_SLOTS: usize = 48;
/// How long hart 0 waits for the others before declaring them hung.
const FINISH_TIMEOUT_US: u64 = 30_000_000;
/// MMIO base of the CLINT's per-hart software-interrupt (`msip`) registers.
const CLINT_MSIP: usize = 0x0200_0000;
/// `mie` bit enabling machine software interrupts, so `wfi` wakes on an IPI.
const MIE_MSIE: usize = 1 << 3;

/// Harts taking part; secondaries read it once [`GO`] is set.
static HARTS: AtomicUsize = AtomicUsize::new(0);
/// Set by hart 0 when the allocators are up and the log is ready.
static GO: AtomicBool = AtomicBool::new(false);
/// Harts that reached the start line; all start together.
static ARRIVED: AtomicUsize = AtomicUsize::new(0);
/// Secondary harts done with their share.
static FINISHED: AtomicUsize = AtomicUsize::new(0);
/// The next log sequence number.
static NEXT_EVENT: AtomicUsize = AtomicUsize::new(0);
/// The log: `EVENT_CAPACITY` slots, each written once by the hart that drew its number.
static EVENTS: kalloc_api::sync::AtomicPtr<Event> =
    kalloc_api::sync::AtomicPtr::new(core::ptr::null_mut());
/// Slots in the log.
static EVENT_CAPACITY: AtomicUsize = AtomicUsize::new(0);

/// Which allocator a held range came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Frames from the lock-free bitmap.
    AtomicFrames,
    /// Frames from the buddy allocator's per-hart front.
    BuddyFrames,
    /// A block from the global allocator.
    HeapBlock,
    /// An object from the pinned per-hart slab cache.
    SlabObject,
}

/// Something a hart holds.
#[derive(Clone, Copy, Debug)]
enum Held {
    Frames(Source, FrameRange),
    Heap(NonNull<u8>, Layout),
    Object(NonNull<u8>, usize),
}

impl Held {
    fn source(&self) -> Source {
        match self {
            Self::Frames(source, _) => *source,
            Self::Heap(..) => Source::HeapBlock,
            Self::Object(..) => Source::SlabObject,
        }
    }

    /// First byte and length of the memory held.
    fn span(&self) -> (u64, u64) {
        match self {
            Self::Frames(_, range) => (range.start_address().as_u64(), range.size_bytes()),
            Self::Heap(ptr, layout) => (ptr.as_ptr() as u64, layout.size() as u64),
            Self::Object(ptr, size) => (ptr.as_ptr() as u64, *size as u64),
        }
    }

    /// The first and last words of the memory held, where stamps go.
    fn stamp_slots(&self) -> [*mut u64; 2] {
        let (start, len) = self.span();
        let first = start as usize;
        let last = first + len as usize - 8;
        [
            core::ptr::with_exposed_provenance_mut(first),
            core::ptr::with_exposed_provenance_mut(last),
        ]
    }

    /// Writes `stamp` into the held memory.
    fn stamp(&self, stamp: u64) {
        for slot in self.stamp_slots() {
            // SAFETY: the hart holds this memory exclusively (that is what is
            // under test); it is identity-mapped RAM at least 8 bytes long and
            // 8-byte aligned.
            unsafe { slot.write_volatile(stamp) };
        }
    }

    /// Panics if the stamp is no longer there: someone else wrote to our memory.
    fn check_stamp(&self, stamp: u64) {
        for slot in self.stamp_slots() {
            // SAFETY: as in `stamp`.
            let found = unsafe { slot.read_volatile() };
            assert_eq!(
                found,
                stamp,
                "hart {}: {:?} at {:#x} overwritten while held",
                entry::hart_id(),
                self.source(),
                slot as usize
            );
        }
    }
}

/// One log entry.
#[derive(Clone, Copy, Debug)]
struct Event {
    start: u64,
    len: u32,
    hart: u16,
    allocated: bool,
    source: Source,
}

/// The running hart's token for the pinned slab cache.
fn pinned_hart() -> PinnedCpu {
    // SAFETY: each hart runs one context and never migrates, and the trap
    // handler allocates nothing (it reports the fault and stops the boot).
    unsafe { PinnedCpu::new(entry::hart_id()) }
}

fn record(held: &Held, allocated: bool) {
    let seq = NEXT_EVENT.fetch_add(1, Ordering::SeqCst);
    let capacity = EVENT_CAPACITY.load(Ordering::Relaxed);
    assert!(seq < capacity, "event log overflow");
    let (start, len) = held.span();
    let event = Event {
        start,
        len: len as u32,
        hart: entry::hart_id() as u16,
        allocated,
        source: held.source(),
    };
    // SAFETY: slot `seq` is below the capacity and drawn by this hart alone;
    // hart 0 reads the log only after every hart has finished.
    unsafe { EVENTS.load(Ordering::Acquire).add(seq).write(event) };
}

/// Runs the concurrent test on `harts` harts (hart 0 included) and checks the
/// log. Returns only if it passed.
pub fn run(stack: &'static Stack, harts: usize) {
    let capacity = harts * OPS_PER_HART * 2;
    let mut log: Vec<Event> = Vec::with_capacity(capacity);
    EVENT_CAPACITY.store(capacity, Ordering::Relaxed);
    EVENTS.store(log.as_mut_ptr(), Ordering::Release);
    HARTS.store(harts, Ordering::Relaxed);
    stack.buddy.drain();
    let buddy_free = stack.buddy.free_frames();
    let atomic_free = stack.atomic.free_frames();
    let started = machine::micros();
    GO.store(true, Ordering::Release);
    for hart in 1..harts {
        let msip: *mut u32 = core::ptr::with_exposed_provenance_mut(CLINT_MSIP + 4 * hart);
        // SAFETY: the CLINT's msip register of an existing hart; raising it
        // only wakes that hart from `wfi`.
        unsafe { msip.write_volatile(1) };
    }

    worker(stack, 0);
    while FINISHED.load(Ordering::Acquire) < harts - 1 {
        assert!(
            machine::micros() - started < FINISH_TIMEOUT_US,
            "only {} of {} secondary harts finished",
            FINISHED.load(Ordering::Relaxed),
            harts - 1
        );
        core::hint::spin_loop();
    }
    let elapsed = machine::micros() - started;
    let logged = NEXT_EVENT.load(Ordering::Acquire);
    assert_eq!(logged, capacity, "every allocation and free is logged");
    // SAFETY: every slot below `logged` was written by the hart that drew it,
    // and all harts finished (the Acquire load above synchronises with them).
    unsafe { log.set_len(logged) };
    println!(
        "smp       {harts} harts x {OPS_PER_HART} allocations in {} ms",
        elapsed / 1000
    );
    stack.buddy.drain();
    assert_eq!(
        stack.buddy.free_frames(),
        buddy_free,
        "smp: buddy frames lost"
    );
    assert_eq!(
        stack.atomic.free_frames(),
        atomic_free,
        "smp: atomic bitmap frames lost"
    );
    stack
        .buddy
        .with_allocator(|buddy| buddy.check_invariants())
        .unwrap_or_else(|error| panic!("smp: buddy: {error}"));
    stack.objects.shrink(&stack.pages());
    let objects = stack.objects.stats();
    assert_eq!(objects.objects_in_use, 0, "smp: slab objects lost");
    assert_eq!(objects.slabs, 0, "smp: slab pages kept after shrink");
    stack
        .atomic
        .check_quiescent()
        .unwrap_or_else(|error| panic!("smp: atomic bitmap: {error}"));
    let summary = replay(&log).unwrap_or_else(|error| panic!("smp: {error:?}"));
    println!(
        "smp       log of {} events replayed: no overlap; {} ranges live at most, {} handed between harts",
        log.len(),
        summary.most_live,
        summary.handed_over
    );
}

/// What a replay of the log found.
#[derive(Debug)]
pub struct Replay {
    /// The most ranges held at once.
    pub most_live: usize,
    /// Allocations of an address last held by another hart.
    pub handed_over: usize,
}

/// Two holders of the same memory at once, or a log that makes no sense.
#[derive(Debug, PartialEq, Eq)]
pub enum LogError {
    /// Event `seq` handed out memory that another holder still had.
    Overlap {
        /// The offending event.
        seq: usize,
        /// The allocator that handed the memory out.
        source: Source,
        /// The hart that still held it.
        holder: u16,
    },
    /// Event `seq` freed memory its hart did not hold.
    FreeOfUnheld {
        /// The offending event.
        seq: usize,
    },
    /// Ranges still held at the end of the log.
    NeverFreed(usize),
}

/// Replays `log` in sequence order, checking that live ranges never overlap.
fn replay(log: &[Event]) -> Result<Replay, LogError> {
    let mut live: BTreeMap<u64, (u64, u16)> = BTreeMap::new();
    let mut last_holder: BTreeMap<u64, u16> = BTreeMap::new();
    let mut summary = Replay {
        most_live: 0,
        handed_over: 0,
    };
    for (seq, event) in log.iter().enumerate() {
        let end = event.start + u64::from(event.len);
        if event.allocated {
            if let Some((_, &(other_end, holder))) = live.range(..end).next_back() {
                if other_end > event.start {
                    return Err(LogError::Overlap {
                        seq,
                        source: event.source,
                        holder,
                    });
                }
            }
            live.insert(event.start, (end, event.hart));
            summary.most_live = summary.most_live.max(live.len());
            if last_holder
                .insert(event.start, event.hart)
                .is_some_and(|hart| hart != event.hart)
            {
                summary.handed_over += 1;
            }
        } else if live.remove(&event.start) != Some((end, event.hart)) {
            return Err(LogError::FreeOfUnheld { seq });
        }
    }
    match live.len() {
        0 => Ok(summary),
        held => Err(LogError::NeverFreed(held)),
    }
}

/// Checks that [`replay`] catches what it is there to catch, on made-up logs.
pub fn check_replay_catches_overlaps() {
    let event = |start, len, hart, allocated| Event {
        start,
        len,
        hart,
        allocated,
        source: Source::HeapBlock,
    };
    let handed_on = [
        event(0x1000, 0x100, 0, true),
        event(0x1000, 0x100, 0, false),
        event(0x1080, 0x100, 1, true),
        event(0x1080, 0x100, 1, false),
    ];
    assert!(replay(&handed_on).is_ok_and(|r| r.handed_over == 0 && r.most_live == 1));
    let overlapping = [
        event(0x1000, 0x100, 0, true),
        event(0x1080, 0x100, 1, true),
        event(0x1000, 0x100, 0, false),
        event(0x1080, 0x100, 1, false),
    ];
    assert_eq!(
        replay(&overlapping).unwrap_err(),
        LogError::Overlap {
            seq: 1,
            source: Source::HeapBlock,
            holder: 0
        }
    );
    let inside = [event(0x1000, 0x1000, 0, true), event(0x1800, 8, 1, true)];
    assert_eq!(
        replay(&inside).unwrap_err(),
        LogError::Overlap {
            seq: 1,
            source: Source::HeapBlock,
            holder: 0
        }
    );
    let foreign_free = [event(0x1000, 8, 0, true), event(0x1000, 8, 1, false)];
    assert_eq!(
        replay(&foreign_free).unwrap_err(),
        LogError::FreeOfUnheld { seq: 1 }
    );
    assert_eq!(
        replay(&[event(0x1000, 8, 0, true)]).unwrap_err(),
        LogError::NeverFreed(1)
    );
}

/// A secondary hart's life: wait for hart 0, take part, park.
pub fn secondary(hart: usize) -> ! {
    // SAFETY: enabling the software interrupt in `mie` only lets `wfi` return
    // on an IPI; interrupts stay globally off (mstatus.MIE is clear), so no
    // trap is ever taken for it.
    unsafe { core::arch::asm!("csrs mie, {}", in(reg) MIE_MSIE) };
    while !GO.load(Ordering::Acquire) {
        wait_for_interrupt();
    }
    let msip: *mut u32 = core::ptr::with_exposed_provenance_mut(CLINT_MSIP + 4 * hart);
    // SAFETY: this hart's own msip register; clearing it acknowledges the IPI.
    unsafe { msip.write_volatile(0) };
    if hart < HARTS.load(Ordering::Relaxed) {
        let stack = crate::stack::get();
        worker(stack, hart);
        FINISHED.fetch_add(1, Ordering::Release);
    }
    loop {
        wait_for_interrupt();
    }
}

fn wait_for_interrupt() {
    // SAFETY: `wfi` only pauses the hart; it has no memory effects.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
}

/// One hart's share: random allocations from every shared allocator.
fn worker(stack: &'static Stack, hart: usize) {
    ARRIVED.fetch_add(1, Ordering::AcqRel);
    let waiting_since = machine::micros();
    while ARRIVED.load(Ordering::Acquire) < HARTS.load(Ordering::Relaxed) {
        assert!(
            machine::micros() - waiting_since < FINISH_TIMEOUT_US,
            "only {} of {} harts reached the start line",
            ARRIVED.load(Ordering::Relaxed),
            HARTS.load(Ordering::Relaxed)
        );
        core::hint::spin_loop();
    }
    let mut rng = XorShift::new(0x5eed_0000 + hart as u64);
    let mut live: [Option<(Held, u64)>; LIVE_SLOTS] = [None; LIVE_SLOTS];
    for step in 0..OPS_PER_HART {
        let slot = rng.below(LIVE_SLOTS);
        if let Some((held, stamp)) = live[slot].take() {
            give_back(stack, held, stamp);
        }
        let held = take(stack, &mut rng);
        record(&held, true);
        if let Held::Frames(source, range) = held {
            assert!(
                !stack.touches_reserved(range),
                "{source:?} handed out reserved {range:?}"
            );
        }
        let stamp = ((hart as u64) << 56) | step as u64;
        held.stamp(stamp);
        live[slot] = Some((held, stamp));
    }
    for (held, stamp) in live.iter_mut().filter_map(Option::take) {
        give_back(stack, held, stamp);
    }
    // Only a hart can empty its own pinned magazines.
    stack.objects.flush_cpu(&pinned_hart(), &stack.pages());
}

/// Allocates something random.
fn take(stack: &'static Stack, rng: &mut XorShift) -> Held {
    let choice = rng.below(100);
    if choice < 25 {
        let frame = stack
            .buddy
            .allocate_frame()
            .unwrap_or_else(|error| panic!("buddy frame: {error:?}"));
        Held::Frames(Source::BuddyFrames, FrameRange::new(frame, 1))
    } else if choice < 30 {
        let count = 1 << rng.below(5);
        let range = (&stack.buddy)
            .allocate(count, count)
            .unwrap_or_else(|error| panic!("buddy run of {count}: {error:?}"));
        Held::Frames(Source::BuddyFrames, range)
    } else if choice < 50 {
        let range = (&stack.atomic)
            .allocate(1, 1)
            .unwrap_or_else(|error| panic!("atomic bitmap frame: {error:?}"));
        Held::Frames(Source::AtomicFrames, range)
    } else if choice < 55 {
        let (count, align) = match rng.below(20) {
            0 => (512, 512),
            1..=9 => (1 + rng.below(16), 1),
            _ => {
                let count = 1 << rng.below(7);
                (count, count)
            }
        };
        let range = (&stack.atomic)
            .allocate(count, align)
            .unwrap_or_else(|error| panic!("atomic bitmap run of {count}/{align}: {error:?}"));
        Held::Frames(Source::AtomicFrames, range)
    } else if choice < 85 {
        let size = match rng.below(16) {
            0 => 8 * (1 + rng.below(8192)),
            1..=3 => 8 * (1 + rng.below(512)),
            _ => 8 * (1 + rng.below(64)),
        };
        let layout = Layout::from_size_align(size, 8).expect("small layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc::alloc::alloc(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| panic!("heap block of {size} bytes"));
        Held::Heap(ptr, layout)
    } else {
        let object = stack
            .objects
            .allocate(&pinned_hart(), &stack.pages())
            .unwrap_or_else(|error| panic!("slab object: {error:?}"));
        Held::Object(object, stack.objects.object_size())
    }
}

/// Checks the stamp, logs the free and gives the memory back.
fn give_back(stack: &'static Stack, held: Held, stamp: u64) {
    held.check_stamp(stamp);
    record(&held, false);
    match held {
        Held::Frames(Source::BuddyFrames, range) => (&stack.buddy)
            .deallocate(range)
            .unwrap_or_else(|error| panic!("buddy free of {range:?}: {error:?}")),
        Held::Frames(Source::AtomicFrames, range) => (&stack.atomic)
            .deallocate(range)
            .unwrap_or_else(|error| panic!("atomic bitmap free of {range:?}: {error:?}")),
        Held::Frames(source, range) => unreachable!("{source:?} {range:?}"),
        // SAFETY: allocated above with this layout and held until now.
        Held::Heap(ptr, layout) => unsafe { alloc::alloc::dealloc(ptr.as_ptr(), layout) },
        // SAFETY: allocated above from this cache and held until now; the
        // hart that frees it need not be the one that allocated it.
        Held::Object(object, _) => unsafe {
            stack
                .objects
                .deallocate(&pinned_hart(), object, &stack.pages())
        }
        .unwrap_or_else(|error| panic!("slab object free: {error:?}")),
    }
}
