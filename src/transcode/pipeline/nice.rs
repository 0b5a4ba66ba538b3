//! Lowering one media thread's scheduling priority, for work that must
//! yield to the threads a stream waits on.

/// Nice value of the threads that yield: every offline rung encoder but the
/// largest's, and every quality check thread.
const NICE: libc::c_int = 4;

/// Offline, the largest rung's encoder is the longest chain of work. At an
/// equal share of the cores it falls behind the others, fills its queue, and
/// at the end of the file encodes that backlog alone on one core while the
/// others idle. Lowering the other encoders' priority keeps it fed first and
/// leaves the smaller rungs, which finish side by side, to fill the gaps
/// (about 5% less wall time for the standard 1080p ladder on two cores).
/// A quality check yields to every encoder: a late score costs nothing, a
/// late packet costs viewers.
pub(super) fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority with PRIO_PROCESS and a
    // thread id changes that one thread's nice value (a Linux thread is a
    // schedulable entity of its own) and reports failure through its return.
    let failed = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) != 0
    };
    if failed {
        tracing::debug!(error = %std::io::Error::last_os_error(), "thread priority unchanged");
    }
}
